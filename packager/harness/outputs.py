"""Writing a run's outputs: predictions.jsonl (resumable), metrics.json, system.json.

predictions.jsonl is appended one batch at a time and flushed to disk after
each batch, so a run killed half-way keeps every finished input; ``--resume``
reads it back, drops a truncated last line (the one being written when the
process died) and skips the ids already present.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import resource
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from packager.harness.errors import DatasetError, NoSpace
from packager.results import (
    METRICS_NAME,
    PREDICTIONS_NAME,
    SYSTEM_NAME,
    Metrics,
    Prediction,
    System,
    dump_line,
)

log = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def predictions_for(
    ids: Sequence[str],
    outputs: np.ndarray,
    *,
    label_offset: int = 0,
    input_hashes: Sequence[str | None] | None = None,
    already_probabilities: bool = False,
) -> list[Prediction]:
    """One Prediction per row of a (batch, classes) output."""
    out = np.ascontiguousarray(outputs, dtype=np.float32).reshape(len(ids), -1)
    probs = out.astype(np.float64) if already_probabilities else softmax(out)
    preds = []
    for i, sample_id in enumerate(ids):
        top = np.argsort(-probs[i], kind="stable")[:5]
        preds.append(
            Prediction(
                id=sample_id,
                top5=[int(k) - label_offset for k in top],
                probs=[round(float(probs[i, k]), 6) for k in top],
                output_sha256=hashlib.sha256(out[i].tobytes()).hexdigest(),
                input_sha256=input_hashes[i] if input_hashes else None,
            )
        )
    return preds


class PredictionWriter:
    """Appends predictions and fsyncs after every batch.

    It remembers only the ids written (for ``--resume`` and duplicates), never the
    predictions: accuracy is counted afterwards from the file (``iter_predictions``),
    so memory does not grow with the data set beyond one short string per sample."""

    def __init__(self, out_dir: Path, *, resume: bool) -> None:
        self.path = Path(out_dir) / PREDICTIONS_NAME
        self.done: set[str] = set()
        if resume and self.path.exists():
            self.done = _recover(self.path)
            log.info("resuming: %d prediction(s) already in %s", len(self.done), self.path)
        elif self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, predictions: Iterable[Prediction]) -> None:
        try:
            for p in predictions:
                self._f.write(dump_line(p))
                self.done.add(p.id)
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                # A few hundred bytes a line: say so rather than "No space left on device".
                st = os.statvfs(self.path.parent)
                raise NoSpace(self.path.parent, 4096, st.f_bavail * st.f_frsize) from None
            raise

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _recover(path: Path) -> set[str]:
    """Ids of the valid lines of an interrupted predictions file; a torn last line is cut off the file."""
    size = path.stat().st_size
    keep = size
    with path.open("rb") as f:
        # everything after the last newline was being written when we died
        f.seek(max(0, size - 65536))
        tail = f.read()
        cut = tail.rfind(b"\n")
        keep = (size - len(tail) + cut + 1) if cut >= 0 else (0 if size <= 65536 else size)
    if keep != size:
        log.warning("%s: dropping a truncated last line (%d bytes)", path, size - keep)
        with path.open("r+b") as f:
            f.truncate(keep)
    done: set[str] = set()
    with path.open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                p = Prediction.model_validate_json(line)
            except ValueError as e:
                raise DatasetError(f"cannot resume, line {n} is not a prediction: {str(e).splitlines()[0]}", file=path) from None
            done.add(p.id)
    return done


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_metrics(out_dir: Path, metrics: Metrics) -> Path:
    path = Path(out_dir) / METRICS_NAME
    _write_json(path, metrics.model_dump(mode="json"))
    return path


def write_system(out_dir: Path, system: System) -> Path:
    path = Path(out_dir) / SYSTEM_NAME
    _write_json(path, system.model_dump(mode="json"))
    return path


def peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux; the preprocessing workers are children and not counted.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --- system.json ------------------------------------------------------------------

# Device nodes that tell which accelerators a run could see.
_DEVICE_GLOBS = ("nvidia*", "nvhost-*", "dri/renderD*", "kfd", "xdevcfg", "xclmgmt*", "xocl*", "dri/card*", "mali*", "accel/*", "vchiq", "video*")


def collect_system(*, image_digest: str | None, frameworks: dict[str, str], sandbox: dict | None = None) -> System:
    return System(
        machine=platform.machine(),
        cpu_model=_cpu_model(),
        cores=len(os.sched_getaffinity(0)),
        memory_bytes=_memory_bytes(),
        os=_os_release(),
        kernel=platform.release(),
        python=sys.version.split()[0],
        frameworks=frameworks,
        devices=_devices(),
        image_digest=image_digest,
        sandbox=sandbox or {},
    )


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return None


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _os_release() -> str:
    for p in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            fields = dict(
                line.split("=", 1) for line in p.read_text().splitlines() if "=" in line
            )
            return fields.get("PRETTY_NAME", "").strip('"') or "unknown"
        except OSError:
            continue
    return platform.system()


def _devices() -> list[str]:
    dev = Path("/dev")
    found: set[str] = set()
    for pattern in _DEVICE_GLOBS:
        found.update(str(p) for p in dev.glob(pattern))
    return sorted(found)


def framework_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {"numpy": np.__version__}
    for mod in ("PIL", "onnx", "onnxruntime", "mlperf_loadgen", "tvm"):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        out["Pillow" if mod == "PIL" else mod] = str(getattr(m, "__version__", "unknown"))
    if "mlperf_loadgen" in out and out["mlperf_loadgen"] == "unknown":
        out["mlperf_loadgen"] = _dist_version("mlcommons-loadgen") or "unknown"
    out.update(extra or {})
    return out


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(name)
    except PackageNotFoundError:
        return None
