"""Check 4 of ``verify``: the signed metrics recomputed from the bundle's own records.

Top-1/top-5 from predictions.jsonl and the ground truth (a labels file, a local
copy of the data set, or the bundle's labels.tsv); the run config and host power
against the runner's record; the stage's input count from the manifest; a
MultiStream claim from its per-query records and LoadGen's detail log.

For MultiStream three things must agree, in integer nanoseconds: the per-query latencies
(``queries.tsv``, LoadGen's own, see ``packager.querylog``), LoadGen's figures in the
scenario's ``mlperf_log_detail.txt``, and the claim in metrics.json (count, mean,
p50/p90/p99, min, max, the early-stopping p99 and the samples per query). A p99 edited in
metrics.json, a latency edited in the records or a detail log from another run each break
one of the two comparisons; the problem names the file and the figure. ``export`` uses
the same ``multistream_problems``.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from packager import querylog
from packager.bundle.contents import BundleFiles, Skip, json_file
from packager.bundle.knobs import (
    RUN_RECORD_NAME,
    platform_knob_problems,
    run_config_problems,
)
from packager.bundle.labels import read_labels
from packager.bundle.power import host_power_problems
from packager.bundle.statement import LABELS_NAME, MANIFEST_NAME
from packager.errors import BadInput, MetricsMismatch
from packager.manifest import Manifest
from packager.mllog import read_detail
from packager.results import (
    METRICS_NAME,
    PREDICTIONS_NAME,
    Accuracy,
    Metrics,
    MultiStreamStats,
    accuracy_from,
)
from packager.sections import Run

ACCURACY_TOLERANCE = 1e-9  # top-1/top-5 are ratios of the same integers; only float noise may differ


@dataclass(frozen=True)
class TruthSource:
    labels: Path | None = None
    dataset: Path | None = None


def check_metrics(b: BundleFiles, source: TruthSource, accuracy_box: list[Accuracy]) -> str:
    st = b.statement_or_skip()
    metrics = b.models.get(METRICS_NAME)
    if not isinstance(metrics, Metrics) or b.predictions is None:
        raise Skip(f"{METRICS_NAME} or {PREDICTIONS_NAME} unreadable (see check 5)")
    labels = source.labels
    if labels is None and source.dataset is not None:
        truth = _dataset_truth(b, source.dataset)
        truth_name = f"dataset {source.dataset}"
    elif labels is not None:
        try:
            truth = read_labels(labels)
        except ValueError as e:
            raise BadInput(str(e), file=labels) from None
        truth_name = str(labels)
    else:
        if b.file(LABELS_NAME) is None:
            raise MetricsMismatch(f"no ground truth: the bundle has no {LABELS_NAME} and neither --labels nor --dataset was given")
        if b.labels is None:
            raise Skip(f"{LABELS_NAME} unreadable (see check 5)")
        truth = b.labels
        truth_name = f"bundle {LABELS_NAME}"

    problems: list[str] = []
    if metrics != st.predicate.metrics:
        problems.append(f"{METRICS_NAME} differs from the metrics in the signed predicate")
    ids = [p.id for p in b.predictions]
    if len(set(ids)) != len(ids):
        problems.append(f"{PREDICTIONS_NAME} has {len(ids) - len(set(ids))} duplicate id(s)")
    unlabeled = [i for i in ids if i not in truth]
    if unlabeled:
        raise MetricsMismatch(f"{len(unlabeled)} prediction(s) have no label in {truth_name}, e.g. {unlabeled[0]!r}")
    got = accuracy_from(b.predictions, truth)
    accuracy_box.append(got)
    claim = metrics.accuracy
    for fname in ("samples", "correct_top1", "correct_top5"):
        if getattr(claim, fname) != getattr(got, fname):
            problems.append(f"{fname} claimed {getattr(claim, fname)}, recomputed {getattr(got, fname)}")
    for fname in ("top1", "top5"):
        if abs(getattr(claim, fname) - getattr(got, fname)) > ACCURACY_TOLERANCE:
            problems.append(f"{fname} claimed {getattr(claim, fname):.6f}, recomputed {getattr(got, fname):.6f}")
    stage = st.predicate.stage
    if metrics.stage != stage or st.predicate.run.stage != stage:
        problems.append(f"stage {metrics.stage!r} in {METRICS_NAME} vs {stage!r} in the statement")
    if st.predicate.run.samples != got.samples:
        problems.append(f"statement run.samples {st.predicate.run.samples} vs {got.samples} predictions")
    record = b.file(RUN_RECORD_NAME)
    run_record = json_file(b, RUN_RECORD_NAME, record) if record is not None else None
    problems += run_config_problems(st, metrics, run_record)
    run = _platform_run(b, metrics.platform)
    problems += platform_knob_problems(metrics, run.knobs if run is not None else {})
    problems += host_power_problems(st, run_record)
    expected = _expected_samples(b, stage, len(truth), metrics.platform)
    if expected is not None and got.samples != expected:
        problems.append(f"{stage} stage should evaluate {expected} inputs, {PREDICTIONS_NAME} has {got.samples}")
    problems += _multistream(b, metrics)
    if problems:
        raise MetricsMismatch("; ".join(problems))
    ms = metrics.multistream
    also = f"; MultiStream p99 {ms.p99_s * 1e3:.3f} ms recomputed from {ms.count} queries" if ms else ""
    return (f"top-1 {got.top1:.4f} ({got.correct_top1}/{got.samples}), top-5 {got.top5:.4f} ({got.correct_top5}/{got.samples}) "
            f"vs {truth_name}{also}")


def _multistream(b: BundleFiles, metrics: Metrics) -> list[str]:
    """A MultiStream claim against its per-query records and LoadGen's detail log, both regular files of the bundle."""
    ms = metrics.multistream
    if ms is None:
        return []
    if not ms.queries or b.file(ms.queries) is None:
        return [f"multistream: its per-query records {ms.queries!r} are not a file of the bundle"]
    detail = ms.queries.rsplit("/", 1)[0] + "/" + DETAIL_NAME if "/" in ms.queries else DETAIL_NAME
    if b.file(detail) is None:
        return [f"multistream: LoadGen's {detail} is not a file of the bundle"]
    return multistream_problems(b.root, ms)


def _dataset_truth(b: BundleFiles, root: Path) -> dict[str, int]:
    """Ground truth read from a local copy of the dataset, the way the harness reads it."""
    from packager.harness.dataset import DatasetSpec, load_dataset, resolve, truth

    manifest = b.models.get(MANIFEST_NAME)
    ds = getattr(manifest, "dataset", None)
    hint = DatasetSpec(root=root) if ds is None else DatasetSpec(root=root, layout=ds.layout, labels=ds.labels, images=ds.images, synsets=ds.synsets)
    # The user's copy may be in another layout than the manifest's (an ILSVRC2012 directory with val.txt):
    # read it as the run did, by the layout the signed metrics record, else by detection.
    metrics = b.models.get(METRICS_NAME)
    recorded = (getattr(metrics, "dataset", None) or {}).get("layout")
    return truth(load_dataset(resolve(root, hint, layout=recorded if isinstance(recorded, str) else None)))


def _platform_run(b: BundleFiles, platform: str) -> Run | None:
    """The run settings of the platform that ran, from the bundle's manifest (``runs.<platform>``, else ``run``)."""
    manifest = b.models.get(MANIFEST_NAME)
    if not isinstance(manifest, Manifest):
        return None
    return manifest.runs.get(platform, manifest.run)


def _expected_samples(b: BundleFiles, stage: str, n_labels: int, platform: str) -> int | None:
    """The stage's input count from the platform's run settings in the bundle's manifest, capped by the labelled inputs."""
    run = _platform_run(b, platform)
    if run is None:
        return n_labels if stage == "full" else None
    wanted = getattr(run.stages, stage).samples
    return n_labels if wanted is None else min(wanted, n_labels)


# --- MultiStream ---------------------------------------------------------------------------

DETAIL_NAME = "mlperf_log_detail.txt"
MAX_DETAIL_BYTES = 1 << 20  # LoadGen's detail log of one scenario is ~30 KB
# metrics.json holds LoadGen's nanoseconds times 1e-9; the same product here, so only float printing may differ.
_REL = 1e-12

# metrics.json field -> the detail log's key
_CLAIMS = {
    "count": "result_query_count",
    "mean_s": "result_mean_query_latency_ns",
    "p50_s": "result_50.00_percentile_per_query_latency_ns",
    "p90_s": "result_90.00_percentile_per_query_latency_ns",
    "p99_s": "result_99.00_percentile_per_query_latency_ns",
    "min_s": "result_min_query_latency_ns",
    "max_s": "result_max_query_latency_ns",
}


def multistream_problems(root: Path, ms: MultiStreamStats) -> list[str]:
    """Everything in which the claim, LoadGen's detail log and the per-query records of ``root`` disagree."""
    if not ms.queries:
        return ["metrics.json's multistream names no per-query records (queries)"]
    parts = ms.queries.split("/")
    if ms.queries.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in ms.queries:
        return [f"multistream.queries {ms.queries!r} is not a plain relative path inside the result"]
    records = root / ms.queries
    detail_path = records.parent / DETAIL_NAME
    try:
        latencies = querylog.read(records)
    except querylog.QueryLogError as e:
        return [str(e).replace(str(root) + "/", "")]
    try:
        detail = _detail(detail_path)
    except ValueError as e:
        return [str(e).replace(str(root) + "/", "")]
    rel_records, rel_detail = ms.queries, str(detail_path.relative_to(root))
    problems = [f"{rel_records} gives {key} {mine}, {rel_detail} logged {theirs}"
                for key, (mine, theirs) in querylog.differences(latencies, detail).items()]
    figures = querylog.stats(latencies)
    for name, key in _CLAIMS.items():
        claimed = getattr(ms, name)
        want = figures[key] if name == "count" else figures[key] * 1e-9
        if not math.isclose(claimed, want, rel_tol=_REL, abs_tol=0.0):
            problems.append(f"multistream.{name} claimed {claimed}, recomputed {want} from {rel_records}")
    est = figures["early_stopping_latency_ms"] * 1e-9 if figures["early_stopping_met"] else None
    if (ms.early_stopping_p99_s is None) != (est is None) or (
            est is not None and not math.isclose(ms.early_stopping_p99_s or 0.0, est, rel_tol=_REL, abs_tol=0.0)):
        problems.append(f"multistream.early_stopping_p99_s claimed {ms.early_stopping_p99_s}, recomputed {est} "
                        f"from {rel_records}")
    if detail.get("effective_samples_per_query") != ms.samples_per_query:
        problems.append(f"multistream.samples_per_query claimed {ms.samples_per_query}, {rel_detail} says "
                        f"{detail.get('effective_samples_per_query')}")
    return problems


def _detail(path: Path) -> dict:
    """LoadGen's detail log, a regular file within its cap; ValueError naming the file otherwise."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DETAIL_BYTES:
        raise ValueError(f"{path}: not a regular file of at most {MAX_DETAIL_BYTES} bytes")
    try:
        return read_detail(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8") from None
