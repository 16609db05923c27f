"""One source of ``export --mlperf`` read and checked (steps 1-2 of ``scoreboard.mlperf``), and its names.

A ``.tar.gz`` bundle is verified and unpacked, a signed directory verified in
place, a plain run directory taken as it is; metrics, system and predictions are
parsed with their wire models, top-1/top-5 recomputed against the labels, and
LoadGen's accuracy log cross-checked sample by sample.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from packager.errors import BadInput, BundleCheckFailed, MetricsMismatch
from packager.mllog import read_detail
from packager.results import (
    METRICS_NAME,
    PREDICTIONS_NAME,
    SYSTEM_NAME,
    Accuracy,
    Metrics,
    Prediction,
    System,
    accuracy_from,
)

log = logging.getLogger(__name__)

ENVELOPE = "envelope.dsse.json"
LABELS = "labels.tsv"
MANIFEST = "request.yaml"
LOCK = "request.lock"
UNKNOWN = "unknown"


class ExportError(BadInput):
    """A source cannot be turned into a submission tree; the message names the file and field."""


@dataclass(frozen=True)
class ExportOptions:
    submitter: str = "request-pack"
    trust: tuple[Path, ...] = ()
    trust_dir: Path | None = None
    verify: bool = True
    labels: Path | None = None
    status: str = "rdi"
    system_type: str = "edge"


@dataclass(frozen=True)
class Result:
    source: Path
    root: Path
    metrics: Metrics
    system: System
    predictions: tuple[Prediction, ...]
    accuracy: Accuracy
    truth_name: str
    signed: bool
    signer: str | None
    manifest: dict | None


# --- 1-2. reading and checking one source ------------------------------------------


def safe_component(text: str) -> str:
    """A directory name the checker and every file system accept."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return out or UNKNOWN


def _parse(path: Path, model):
    if not path.is_file():
        raise ExportError("missing", file=path)
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ExportError(err["msg"], file=path, field=where) from None


def _predictions(path: Path) -> tuple[Prediction, ...]:
    if not path.is_file():
        raise ExportError("missing", file=path)
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(Prediction.model_validate_json(line))
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"]) or "(line)"
                raise ExportError(f"line {n}: {err['msg']}", file=path, field=where) from None
    if not out:
        raise ExportError("no predictions", file=path)
    return tuple(out)


def _truth(root: Path, labels: Path | None) -> tuple[dict[str, int], str]:
    from packager.bundle.labels import read_labels

    path = labels or root / LABELS
    if not path.is_file():
        raise ExportError(f"no ground truth: the result has no {LABELS}; give --labels (labels TSV or val.txt)",
                          file=path, field="--labels")
    try:
        return read_labels(path), str(path) if labels else f"{LABELS} of the result"
    except (OSError, ValueError) as e:
        raise ExportError(str(e), file=path) from None


def _verify(source: Path, root: Path, opts: ExportOptions) -> str:
    from packager.bundle.keys import TrustStore
    from packager.bundle.verify import verify_bundle

    if not opts.trust and opts.trust_dir is None:
        raise ExportError("a signed bundle is verified before export: give --trust KEY (or --no-verify)",
                          file=source, field="--trust")
    try:
        report = verify_bundle(root, TrustStore.load(list(opts.trust), opts.trust_dir), labels=opts.labels)
    except BundleCheckFailed as e:
        if root != source:  # the unpacked copy's path means nothing to the user: name the archive
            e.message = f"{source}: {e.message.replace(str(root) + '/', '')}"
            e.args = (e.message,)
        raise
    log.info("verified %s (signer %s)", source, report.signer.keyid[:16] if report.signer else "?")
    return report.signer.keyid if report.signer else UNKNOWN


def open_source(source: Path, opts: ExportOptions, scratch: Path) -> Result:
    from packager.bundle.archive import safe_unpack

    if source.is_file():
        # Verified after unpacking: the files checked are the files exported, not a second read of the archive.
        root = safe_unpack(source, scratch / f"{len(list(scratch.iterdir()))}")
        signed = (root / ENVELOPE).is_file()
        if opts.verify and not signed:
            raise ExportError(f"the archive holds no {ENVELOPE}: not a signed bundle (--no-verify exports it anyway)", file=source)
    elif source.is_dir():
        root = source
        signed = (root / ENVELOPE).is_file()
    else:
        raise ExportError("no such bundle or run directory", file=source)
    signer = _verify(source, root, opts) if signed and opts.verify else None

    metrics = _parse(root / METRICS_NAME, Metrics)
    system = _parse(root / SYSTEM_NAME, System)
    preds = _predictions(root / PREDICTIONS_NAME)
    truth, truth_name = _truth(root, opts.labels)
    missing = [p.id for p in preds if p.id not in truth]
    if missing:
        raise ExportError(f"{len(missing)} prediction(s) have no label, first {missing[0]!r}",
                          file=opts.labels or root / LABELS, field="id")
    acc = accuracy_from(preds, truth)
    claim = metrics.accuracy
    if (acc.samples, acc.correct_top1, acc.correct_top5) != (claim.samples, claim.correct_top1, claim.correct_top5):
        raise MetricsMismatch(
            f"{root / METRICS_NAME}: accuracy claims {claim.correct_top1}/{claim.samples} top-1, {claim.correct_top5} top-5; "
            f"{PREDICTIONS_NAME} against {truth_name} gives {acc.correct_top1}/{acc.samples}, {acc.correct_top5}"
        )
    if uses_loadgen(metrics):
        _check_loadgen_accuracy(root, preds)
    if metrics.multistream is not None:
        from packager.bundle.recompute import multistream_problems

        problems = multistream_problems(root, metrics.multistream)
        if problems:
            raise MetricsMismatch(f"{source}: MultiStream: " + "; ".join(problems[:3]))
    manifest = None
    if (root / MANIFEST).is_file():
        from packager.yamlsafe import load_yaml

        manifest = load_yaml(root / MANIFEST)  # BadInput naming the file and line
    return Result(source, root, metrics, system, preds, acc, truth_name, signed, signer,
                   manifest if isinstance(manifest, dict) else None)


def uses_loadgen(m: Metrics) -> bool:
    return m.driver.startswith("mlperf-loadgen")


def _check_loadgen_accuracy(root: Path, preds: Sequence[Prediction]) -> None:
    """LoadGen's AccuracyOnly log holds each sample's top-1 (little-endian int64) by qsl_idx; qsl_ids.tsv names them."""
    acc_dir = root / "loadgen" / "Accuracy"
    log_path, ids_path = acc_dir / "mlperf_log_accuracy.json", acc_dir / "qsl_ids.tsv"
    if not log_path.is_file() or not ids_path.is_file():
        # A resumed run logs only the samples it ran; without both files there is nothing to compare.
        log.warning("%s: no LoadGen accuracy log and qsl_ids.tsv to cross-check", acc_dir)
        return
    try:
        records = json.loads(log_path.read_text(encoding="utf-8"))
        ids = dict(line.split("\t", 1) for line in ids_path.read_text(encoding="utf-8").splitlines() if line)
    except (ValueError, OSError) as e:
        raise ExportError(f"unreadable: {e}", file=log_path) from None
    top1 = {p.id: p.top5[0] for p in preds}
    for rec in records:
        try:
            sid = ids[str(rec["qsl_idx"])]
            logged = int.from_bytes(bytes.fromhex(rec["data"]), "little", signed=True)
        except (KeyError, TypeError, ValueError):
            raise ExportError(f"record {rec!r} has no qsl_idx in qsl_ids.tsv or no int64 data", file=log_path, field="qsl_idx") from None
        if sid in top1 and top1[sid] != logged:
            raise MetricsMismatch(f"{log_path}: qsl_idx {rec['qsl_idx']} ({sid}) logged class {logged}, "
                                  f"{PREDICTIONS_NAME} says {top1[sid]}")


# --- naming ------------------------------------------------------------------------


def system_name(r: Result) -> str:
    """Hardware + software stack, as MLPerf systems are named: platform, CPU, visible cores, backend, image."""
    plat = r.metrics.platform.replace("linux/", "").replace("/", "")
    cpu = r.system.cpu_model or UNKNOWN
    backend = r.metrics.framework.split(" (")[0].replace(" ", "-")
    # Each image is its own software stack; a run on the host (no image) is another.
    image = f"_img-{r.system.image_digest.removeprefix('sha256:')[:12]}" if r.system.image_digest else ""
    return safe_component(f"{plat}_{cpu}_{r.system.cores}c_{backend}{image}")


def model_name(r: Result) -> str:
    return safe_component(r.metrics.artifact)


def scenarios(m: Metrics) -> list[str]:
    out = []
    if m.latency is not None:
        out.append("SingleStream")
    if m.multistream is not None:
        out.append("MultiStream")
    if m.throughput:
        out.append("Offline")
    return out


def detail_of(path: Path) -> dict:
    try:
        return read_detail(path)
    except ValueError as e:
        raise ExportError(str(e)) from None  # the message names the file and line


def validity_of(summary: Path) -> str:
    m = re.search(r"Result is\s*:\s*(\w+)", summary.read_text(encoding="utf-8"))
    return m.group(1) if m else UNKNOWN


def best_offline(m: Metrics):
    return max(m.throughput, key=lambda t: t.images_per_s)


def loadgen_dir(r: Result, scenario: str) -> Path:
    sub = scenario if scenario in ("SingleStream", "MultiStream") else f"Offline-b{best_offline(r.metrics).batch_size}"
    return r.root / "loadgen" / sub
