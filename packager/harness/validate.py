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


class OutputComparer:
    """Compares outputs batch by batch as the accuracy pass makes them, keeping only the verdicts:
    the run's own outputs are never all in memory (4 KB per image for 1000 classes)."""

    def __init__(self, reference: Path, atol: float, *, label_offset: int = 0) -> None:
        self.reference, self.atol, self.label_offset = reference, atol, label_offset
        self._raw, self._top1 = load_reference(reference)
        self.mismatched: list[str] = []
        self.top1_bad: list[str] = []
        self.missing: list[str] = []
        self.max_diff = 0.0
        self.compared = 0

    def add(self, sid: str, y: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        if sid not in self._top1:
            self.missing.append(sid)
            return
        self.compared += 1
        mine = int(np.argmax(y))
        # predictions store offset-corrected classes
        ref_top1 = self._top1[sid] if self._raw is not None else self._top1[sid] + self.label_offset
        if mine != ref_top1:
            self.top1_bad.append(sid)
        if self._raw is not None:
            r = self._raw[sid]
            if r.shape != y.shape:
                self.mismatched.append(sid)
                return
            d = float(np.max(np.abs(r - y)))
            self.max_diff = max(self.max_diff, d)
            if not d <= self.atol:  # NaN counts as a mismatch
                self.mismatched.append(sid)

    def result(self) -> Validation:
        return Validation(
            reference=str(self.reference),
            atol=self.atol,
            compared=self.compared,
            max_abs_diff=self.max_diff if self._raw is not None and self.compared else None,
            mismatched_ids=self.mismatched,
            top1_mismatched_ids=self.top1_bad,
            missing_ids=self.missing,
            passed=not (self.mismatched or self.top1_bad or self.missing),
        )


def compare_outputs(outputs: Mapping[str, np.ndarray], reference: Path, atol: float, *, label_offset: int = 0) -> Validation:
    comparer = OutputComparer(reference, atol, label_offset=label_offset)
    for sid, y in outputs.items():
        comparer.add(sid, y)
    return comparer.result()
