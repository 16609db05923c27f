"""Output validation: compare each input's raw outputs with reference outputs, id by id.

Reference outputs are an ``.npz`` with ``ids`` (strings) and ``outputs``
(float32, one row per id), as the harness writes with ``--save-outputs``
(``outputs.npz``) on a trusted backend. An input fails when any output value
differs by more than ``atol`` or its top-1 class differs; both lists name the ids.
A ``predictions.jsonl`` can also serve as reference: then only top-1 is compared
(it holds hashes, not values, so no tolerance applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from packager.harness.errors import ConfigError
from packager.results import Validation, read_predictions


def load_reference(path: Path) -> tuple[dict[str, np.ndarray] | None, dict[str, int]]:
    """(raw outputs by id or None, top-1 index by id)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("reference outputs file does not exist", file=path)
    if path.suffix == ".jsonl":
        preds = read_predictions(path)
        return None, {p.id: p.top5[0] for p in preds}
    try:
        with np.load(path, allow_pickle=False) as z:
            ids = [str(i) for i in z["ids"]]
            outs = np.asarray(z["outputs"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"not an .npz with 'ids' and 'outputs': {e}", file=path) from None
    if len(ids) != len(outs):
        raise ConfigError(f"{len(ids)} ids but {len(outs)} output rows", file=path)
    raw = {i: o.reshape(-1) for i, o in zip(ids, outs)}
    return raw, {i: int(np.argmax(o)) for i, o in raw.items()}


def compare_outputs(outputs: Mapping[str, np.ndarray], reference: Path, atol: float, *, label_offset: int = 0) -> Validation:
    raw, top1 = load_reference(reference)
    mismatched: list[str] = []
    top1_bad: list[str] = []
    missing: list[str] = []
    max_diff = 0.0
    compared = 0
    for sid, y in outputs.items():
        if sid not in top1:
            missing.append(sid)
            continue
        compared += 1
        mine = int(np.argmax(y))
        ref_top1 = top1[sid] if raw is not None else top1[sid] + label_offset  # predictions store offset-corrected classes
        if mine != ref_top1:
            top1_bad.append(sid)
        if raw is not None:
            r = raw[sid]
            if r.shape != y.shape:
                mismatched.append(sid)
                continue
            d = float(np.max(np.abs(r - y)))
            max_diff = max(max_diff, d)
            if not d <= atol:  # NaN counts as a mismatch
                mismatched.append(sid)
    return Validation(
        reference=str(reference),
        atol=atol,
        compared=compared,
        max_abs_diff=max_diff if raw is not None and compared else None,
        mismatched_ids=mismatched,
        top1_mismatched_ids=top1_bad,
        missing_ids=missing,
        passed=not (mismatched or top1_bad or missing),
    )
