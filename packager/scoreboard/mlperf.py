"""``request-pack export --mlperf``: result bundles or run directories -> an MLPerf-Inference-style submission tree.

The layout is the one MLCommons' submission checker reads for the v6.1 round
(``tools/submission/submission_checker/constants.py`` in mlcommons/inference:
``SYSTEM_PATH``, ``MEASUREMENTS_PATH``, ``PERFORMANCE_LOG_PATH``,
``ACCURACY_*_PATH``, ``SRC_PATH``; LoadGen 6.0.17's built-in seeds are that round's)::

    open/<submitter>/
      model_mapping.json                     open-division model -> closed benchmark ("resnet")
      systems/<system>.json                  SYSTEM_DESC_REQUIRED_FIELDS, "unknown" where we do not know
      src/<model>/README.md, request.yaml, request.lock
      results/<system>/<model>/<scenario>/
        measurements.json  user.conf  README.md
        performance/run_1/mlperf_log_{summary,detail}.txt      only when LoadGen drove the run
        accuracy/accuracy.txt                                  always: recomputed from predictions.jsonl (+ hash=)
        accuracy/mlperf_log_{accuracy.json,summary.txt,detail.txt}   only with LoadGen; the accuracy log
                                                                     truncated as truncate_accuracy_log.py does
    conformance.txt                          beside open/: every rule of the round a result does not meet

The division is always ``open``: our models are not MLCommons' closed reference models.
Nothing is made up: a run whose image had no LoadGen (the built-in driver) gets no
performance logs, and its README says why; the export report lists it. Nothing is
passed off either: a quick-mode run, a data set that is not the 50,000-image
validation set, a run shorter than 600 s or on fewer than 1024 performance samples
is named in conformance.txt, in the scenario's README and on stdout (``ExportReport``).
The full accuracy log and qsl_ids.tsv (qsl_idx -> image id) stay in the bundle.

Steps for each source, in order:

1. a ``.tar.gz`` bundle is verified (``bundle.verify``, with ``--trust`` keys)
   and unpacked with ``bundle.archive.safe_unpack``; a signed directory is
   verified in place; a plain run directory is taken as it is (unsigned);
2. metrics.json, system.json, predictions.jsonl are parsed with their wire
   models; top-1/top-5 are recomputed from the predictions and the labels and
   must equal metrics.json's claim; with LoadGen, its accuracy log must give
   the same top-1 per sample;
3. the tree is written beside ``--out`` and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
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

DIVISION = "open"
CLOSED_BENCHMARK = "resnet"  # the closed image-classification benchmark an open ImageNet entry stands beside
ENVELOPE = "envelope.dsse.json"
LABELS = "labels.tsv"
MANIFEST = "request.yaml"
LOCK = "request.lock"
VALIDATION_SET_SIZE = 50_000
UNKNOWN = "unknown"
ROUND = "v6.1"
CONFORMANCE = "conformance.txt"
# The round's rules this export checks (checker: MODEL_CONFIG["v6.1"], TEST_DURATION_MS, MAX_ACCURACY_LOG_SIZE).
MIN_DURATION_MS = 600_000
MIN_PERFORMANCE_SAMPLES = 1024
OFFICIAL_SEEDS = {"qsl_rng_seed": 2085463073848966840, "sample_index_rng_seed": 2747215439041700203,
                  "schedule_rng_seed": 16159082839903944936}
# truncate_accuracy_log.py: logs of MAX_ACCURACY_LOG_SIZE or more keep their first and last VIEWABLE_SIZE characters.
MAX_ACCURACY_LOG_SIZE = 10 * 1024
VIEWABLE_SIZE = 4096
ACCURACY_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "mlperf_log_accuracy.json")


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
class ScenarioEntry:
    source: str
    system: str
    model: str
    scenario: str
    performance_logs: bool
    reason: str | None  # why there are no performance logs
    accuracy: Accuracy
    signed: bool
    # Every v6.1 rule this scenario does not meet, one sentence each (empty: conformant as far as we can check).
    nonconformities: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportReport:
    root: Path
    division: str
    submitter: str
    entries: tuple[ScenarioEntry, ...]
    files: tuple[str, ...]  # every file written, relative to root

    skipped: tuple[str, ...] = ()  # sources with no performance scenario to export, and why

    @property
    def without_performance_logs(self) -> tuple[ScenarioEntry, ...]:
        return tuple(e for e in self.entries if not e.performance_logs)

    @property
    def nonconformant(self) -> tuple[ScenarioEntry, ...]:
        return tuple(e for e in self.entries if e.nonconformities)


@dataclass(frozen=True)
class _Result:
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


def _safe_component(text: str) -> str:
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


def _open(source: Path, opts: ExportOptions, scratch: Path) -> _Result:
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
    if _uses_loadgen(metrics):
        _check_loadgen_accuracy(root, preds)
    manifest = None
    if (root / MANIFEST).is_file():
        from packager.yamlsafe import load_yaml

        manifest = load_yaml(root / MANIFEST)  # BadInput naming the file and line
    return _Result(source, root, metrics, system, preds, acc, truth_name, signed, signer,
                   manifest if isinstance(manifest, dict) else None)


def _uses_loadgen(m: Metrics) -> bool:
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


def system_name(r: _Result) -> str:
    """Hardware + software stack, as MLPerf systems are named: platform, CPU, visible cores, backend, image."""
    plat = r.metrics.platform.replace("linux/", "").replace("/", "")
    cpu = r.system.cpu_model or UNKNOWN
    backend = r.metrics.framework.split(" (")[0].replace(" ", "-")
    # Each image is its own software stack; a run on the host (no image) is another.
    image = f"_img-{r.system.image_digest.removeprefix('sha256:')[:12]}" if r.system.image_digest else ""
    return _safe_component(f"{plat}_{cpu}_{r.system.cores}c_{backend}{image}")


def model_name(r: _Result) -> str:
    return _safe_component(r.metrics.artifact)


def scenarios(m: Metrics) -> list[str]:
    out = []
    if m.latency is not None:
        out.append("SingleStream")
    if m.throughput:
        out.append("Offline")
    return out


# --- 3. writing ---------------------------------------------------------------------


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else UNKNOWN


def systems_json(r: _Result, opts: ExportOptions, name: str) -> dict:
    """MLCommons' SYSTEM_DESC_REQUIRED_FIELDS, filled from system.json; "unknown" for what no run observes."""
    s, m = r.system, r.metrics
    fw = {k: v for k, v in s.frameworks.items() if not k.startswith("backend:")}
    backend = m.framework.split(" (")[0]
    others = [f"{k} {v}" for k, v in sorted(fw.items()) if not backend.startswith(k)]
    others.append(f"Python {s.python}")
    accel = [d for d in s.devices if "nvidia" in d or "accel" in d or "renderD" in d or "xocl" in d]
    sw = ["request-pack harness (its driver and threads are in each measurement's README)"]
    if s.image_digest:
        sw.append(f"OCI image {s.image_digest}")
    if s.sandbox:
        sw.append(f"sandbox: network {s.sandbox.get('network', UNKNOWN)}, read-only rootfs {s.sandbox.get('read_only_rootfs', UNKNOWN)}")
    return {
        "division": DIVISION,
        # The checker's submitter_check compares this with the directory name, which is made file-system safe.
        "submitter": _safe_component(opts.submitter),
        "status": opts.status,
        "system_name": name,
        "system_type": opts.system_type,
        "system_type_detail": UNKNOWN,
        "number_of_nodes": 1,
        "host_processor_model_name": s.cpu_model or UNKNOWN,
        "host_processors_per_node": UNKNOWN,
        "host_processor_core_count": s.cores,
        "host_processor_frequency": UNKNOWN,
        "host_processor_caches": UNKNOWN,
        "host_processor_interconnect": UNKNOWN,
        "host_memory_capacity": _gib(s.memory_bytes),
        "host_memory_configuration": UNKNOWN,
        "host_storage_capacity": UNKNOWN,
        "host_storage_type": UNKNOWN,
        "host_networking": "none (the run's container had no network)" if s.sandbox.get("network") == "none" else UNKNOWN,
        "host_networking_topology": "N/A" if s.sandbox.get("network") == "none" else UNKNOWN,
        "host_network_card_count": UNKNOWN,
        # A string: the checker's "meaningful response" test reads the number 0 as empty.
        "accelerators_per_node": str(len(accel)),
        "accelerator_model_name": ", ".join(accel) if accel else "N/A",
        **{f"accelerator_{k}": UNKNOWN if accel else "N/A" for k in (
            "memory_capacity", "memory_configuration", "frequency", "host_interconnect", "interconnect",
            "interconnect_topology", "on-chip_memories")},
        "cooling": UNKNOWN,
        "framework": m.framework,
        "operating_system": f"{s.os}, Linux {s.kernel}",
        "other_software_stack": ", ".join(others),
        "hw_notes": f"{s.machine}; host_processor_core_count is the logical CPUs the run could use "
                    f"(sched_getaffinity), not a socket's core count; devices seen: {', '.join(s.devices) or 'none'}",
        "sw_notes": "; ".join(sw),
    }


def measurements_json(r: _Result) -> dict:
    """SYSTEM_IMP_REQUIRED_FILES of the checker's measurements check, from the manifest when the result has one."""
    model = (r.manifest or {}).get("model") or {}
    source = model.get("source") or {}
    conv = model.get("conversion") or {}
    fp = r.metrics.fingerprint
    start = source.get("member") or source.get("filename") or source.get("url") or source.get("path") or UNKNOWN
    if conv:
        transform = f"{conv.get('recipe')} ({', '.join(conv.get('requirements') or [])})"
    else:
        transform = "none recorded" if r.manifest else UNKNOWN
    return {
        "input_data_types": "fp32",  # the shared preprocessing always produces float32 tensors
        "retraining": "no" if r.manifest else UNKNOWN,
        "starting_weights_filename": start,
        "weight_data_types": model.get("precision") or UNKNOWN,
        "weight_transformations": transform,
        "model_sha256": model.get("sha256") or UNKNOWN,
        "weights_sha256": fp.weights_sha256 if fp else UNKNOWN,
        "graph_structure_sha256": fp.structure_sha256 if fp else UNKNOWN,
    }


def accuracy_text(r: _Result) -> str:
    a = r.accuracy
    ids_val = all(p.id.startswith("ILSVRC2012_val_") for p in r.predictions)
    if a.samples == VALIDATION_SET_SIZE and ids_val:
        scope = "These are the 50,000 images of the ILSVRC2012 validation set."
    else:
        scope = (f"These {a.samples} images are NOT the 50,000-image ILSVRC2012 validation set: the figure describes "
                 "this dataset only and is not comparable with MLPerf's ResNet-50 accuracy target.")
    # First line in the form MLPerf's accuracy-imagenet.py prints, which the checker's "acc" pattern reads.
    return (
        f"accuracy={100 * a.top1:.3f}%, good={a.correct_top1}, total={a.samples}\n"
        f"top5_accuracy={100 * a.top5:.3f}%, good={a.correct_top5}, total={a.samples}\n"
        f"# recomputed by request-pack export from {PREDICTIONS_NAME} against {r.truth_name}\n"
        f"# dataset: {r.metrics.dataset_note}\n"
        f"# {scope}\n"
    )


_USER_CONF_KEYS = {
    "requested_min_query_count": "min_query_count",
    "requested_min_duration_ms": "min_duration",
    "requested_single_stream_expected_latency_ns": "single_stream_expected_latency_ns",
    "requested_offline_expected_qps": "offline_expected_qps",
    "requested_performance_sample_count_override": "performance_sample_count_override",
}


def _detail(path: Path) -> dict:
    try:
        return read_detail(path)
    except ValueError as e:
        raise ExportError(str(e)) from None  # the message names the file and line


def _validity(summary: Path) -> str:
    m = re.search(r"Result is\s*:\s*(\w+)", summary.read_text(encoding="utf-8"))
    return m.group(1) if m else UNKNOWN


def user_conf(model: str, scenario: str, detail: dict | None, r: _Result) -> str:
    """The user.conf the run wrote (submission mode, kept in the bundle); else what the harness set, read back."""
    if detail is not None:
        written = _loadgen_dir(r, scenario) / "user.conf"
        if written.is_file():
            return written.read_text(encoding="utf-8")
    if detail is None:
        m = r.metrics
        counts = (f"{m.latency.count} queries" if scenario == "SingleStream" and m.latency
                  else ", ".join(f"batch {t.batch_size}: {t.samples} samples" for t in m.throughput))
        return (f"# No MLPerf LoadGen ran ({m.driver}), so no LoadGen setting applied.\n"
                f"# The built-in timing loop ran {counts} of {scenario} after the warm-up.\n")
    lines = ["# Quick mode: no user.conf was read. The LoadGen TestSettings the harness set for this run, read back\n",
             "# from its mlperf_log_detail.txt:\n"]
    for key, name in _USER_CONF_KEYS.items():
        if key in detail:
            lines.append(f"{model}.{scenario}.{name} = {detail[key]}\n")
    return "".join(lines)


def _best_offline(m: Metrics):
    return max(m.throughput, key=lambda t: t.images_per_s)


def _loadgen_dir(r: _Result, scenario: str) -> Path:
    sub = "SingleStream" if scenario == "SingleStream" else f"Offline-b{_best_offline(r.metrics).batch_size}"
    return r.root / "loadgen" / sub


def truncated_accuracy_log(text: str) -> str:
    """What truncate_accuracy_log.py leaves of mlperf_log_accuracy.json: the first and last 4096 characters."""
    if len(text.encode("utf-8")) < VIEWABLE_SIZE:
        return text
    return text[:VIEWABLE_SIZE] + "\n\n...\n\n" + text[-VIEWABLE_SIZE:]


def nonconformities(r: _Result, scenario: str, perf: dict | None, acc: dict | None, conf: str) -> list[str]:
    """The v6.1 rules this scenario's result does not meet, each as one sentence (checker rule in brackets)."""
    m = r.metrics
    out: list[str] = []
    mode = m.measurement.mode if m.measurement else "quick"
    if mode != "submission":
        out.append("quick-mode run: LoadGen's settings were set by the harness, not read from mlperf.conf and a "
                   "user.conf; not an MLPerf submission")
    if m.measurement and m.measurement.execution == "emulated":
        out.append(f"emulated run ({m.platform} under QEMU): its performance describes the emulator, not the platform")
    if perf is None:
        out.append("no LoadGen performance log (built-in driver) [performance checks]")
    else:
        seeds = {k: perf.get(f"effective_{k}") for k in OFFICIAL_SEEDS}
        if seeds != OFFICIAL_SEEDS:
            out.append(f"performance run seeds {seeds} are not the {ROUND} round's [seeds_check]")
        if (perf.get("effective_min_duration_ms") or 0) < MIN_DURATION_MS:
            out.append(f"minimum duration {perf.get('effective_min_duration_ms')} ms is under {MIN_DURATION_MS} ms "
                       "[min_duration_check]")
        if (perf.get("effective_performance_sample_count") or 0) < MIN_PERFORMANCE_SAMPLES:
            out.append(f"{perf.get('effective_performance_sample_count')} performance samples, under "
                       f"{MIN_PERFORMANCE_SAMPLES} [performance_sample_count_check]")
        if scenario == "SingleStream" and not perf.get("early_stopping_met"):
            out.append("LoadGen's early-stopping condition was not met [latency_check]")
        if perf.get("num_errors"):
            out.append(f"the performance log records {perf['num_errors']} LoadGen error(s) [loadgen_errors_check]")
    if acc is not None:
        total = acc.get("effective_accuracy_sample_count") or acc.get("qsl_reported_total_count")
        if total != VALIDATION_SET_SIZE:
            out.append(f"the accuracy run covers {total} images, not the {VALIDATION_SET_SIZE:,} of the ILSVRC2012 "
                       "validation set [dataset_check]")
        if acc.get("num_errors"):
            out.append(f"the accuracy log records {acc['num_errors']} LoadGen error(s) [loadgen_errors_check]")
    elif perf is not None:
        out.append("no LoadGen accuracy log [accuracy_json_check]")
    else:
        out.append(f"accuracy on {r.accuracy.samples} images from predictions.jsonl, without a LoadGen accuracy log "
                   "[accuracy_json_check]")
    if "TEST-ONLY" in conf:
        out.append("user.conf carries test-only overrides of MLPerf's settings")
    return out


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[str] = []

    def text(self, rel: str, content: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content, encoding="utf-8")
        self.files.append(rel)

    def json(self, rel: str, obj: dict) -> None:
        self.text(rel, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def copy(self, rel: str, src: Path, *, field_name: str = "loadgen_logs") -> None:
        if not src.is_file():
            raise ExportError(f"{src.name} is missing", file=src, field=field_name)
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, p)
        self.files.append(rel)


def _scenario_readme(r: _Result, sysname: str, model: str, scenario: str, perf_reason: str | None, validity: str | None,
                     problems: Sequence[str] = ()) -> str:
    m = r.metrics
    if scenario == "SingleStream" and m.latency:
        figure = (f"SingleStream latency: p50 {m.latency.p50_s * 1e3:.3f} ms, p90 {m.latency.p90_s * 1e3:.3f} ms, "
                  f"p99 {m.latency.p99_s * 1e3:.3f} ms over {m.latency.count} queries")
    else:
        best = _best_offline(m)
        others = ", ".join(f"batch {t.batch_size}: {t.images_per_s:.1f}" for t in m.throughput if t is not best)
        figure = f"Offline throughput: {best.images_per_s:.1f} images/s at batch {best.batch_size} ({best.samples} samples)"
        if others:
            figure += f"; other batch sizes measured (images/s): {others}"
    provenance = (f"signed bundle, verified, signer {r.signer[:16]}" if r.signer
                  else "signed, NOT verified (--no-verify)" if r.signed else "unsigned run directory")
    lines = [
        f"# {model} / {scenario} on {sysname}",
        "",
        f"Open division: {model} is not an MLCommons closed reference model (it stands beside `{CLOSED_BENCHMARK}`, "
        "see model_mapping.json), and the accuracy below is on the dataset the run was given.",
        "",
        f"- artifact: {m.artifact}, stage {m.stage}, platform {m.platform}, framework {m.framework}, "
        f"threads {m.threads if m.threads is not None else UNKNOWN}",
        f"- driver: {m.driver}",
        f"- {figure}",
        f"- accuracy: top-1 {m.accuracy.top1:.4f}, top-5 {m.accuracy.top5:.4f} on {m.accuracy.samples} images ({m.dataset_note})",
        f"- source: {r.source.name} ({provenance})",
        f"- measurement class: {m.measurement.key if m.measurement else 'quick (recorded before classes existed)'}",
    ]
    if perf_reason:
        lines.append(f"- performance logs: none. {perf_reason}")
    else:
        why = (" (LoadGen judges the run against the official minimum duration, query count and early-stopping "
               "rules, which short runs do not meet)") if validity != "VALID" else ""
        lines.append(f"- performance logs: LoadGen's summary and detail logs in results/.../performance/run_1; "
                     f"LoadGen's verdict: {validity}{why}")
    lines += [
        "- accuracy logs: "
        + ("LoadGen AccuracyOnly run (Offline mode, every sample once); the same run serves both scenarios. "
           "`mlperf_log_accuracy.json` holds each sample's top-1 class as a little-endian int64; here it is "
           "truncated to its first and last 4096 characters (the sha256 of the full log is accuracy.txt's `hash=`); "
           "the full log and `qsl_ids.tsv` (qsl_idx to image id) are in the signed bundle under loadgen/Accuracy/."
           if not perf_reason
           else "no LoadGen accuracy log (the built-in driver writes none); accuracy.txt is recomputed from predictions.jsonl."),
        "",
        "Reproduce: `request-pack evaluate artifacts/<name>` with the request.yaml and request.lock in src/"
        f"{model}/ (see its README).",
        "",
    ]
    if problems:
        lines += [f"## Not conformant with MLPerf Inference {ROUND}", "",
                  *(f"- {p}" for p in problems), ""]
    else:
        lines += [f"## MLPerf Inference {ROUND}: every rule this export checks is met", ""]
    return "\n".join(lines)


def _code_readme(r: _Result, model: str) -> str:
    has = [n for n in (MANIFEST, LOCK) if (r.root / n).is_file()]
    lines = [f"# {model}", "", "Packaged, run and measured with request-pack: the manifest pins the model, framework, "
             "preprocessing and platform; the lock pins every input by sha256; the image is rebuilt bit for bit from the lock.", ""]
    if has:
        lines += [f"Files here: {', '.join(has)} (copied from the result).", "",
                  "    mkdir -p artifacts/" + model + " && cp request.yaml request.lock artifacts/" + model + "/",
                  f"    request-pack fetch artifacts/{model} && request-pack evaluate artifacts/{model} --dataset DATASET", ""]
    else:
        lines += ["The result was a plain run directory without its manifest or lock; the harness ran as",
                  "`python -m packager.harness` (see the measurement README for the driver and settings).", ""]
    return "\n".join(lines)


def _write_result(w: _Writer, r: _Result, base: str, sysname: str) -> list[ScenarioEntry]:
    model = model_name(r)
    entries = []
    for rel in (MANIFEST, LOCK):
        if (r.root / rel).is_file() and f"{base}/src/{model}/{rel}" not in w.files:
            w.copy(f"{base}/src/{model}/{rel}", r.root / rel, field_name=rel)
    if f"{base}/src/{model}/README.md" not in w.files:
        w.text(f"{base}/src/{model}/README.md", _code_readme(r, model))
    loadgen = _uses_loadgen(r.metrics)
    acc_dir = r.root / "loadgen" / "Accuracy"
    acc_detail = _detail(acc_dir / "mlperf_log_detail.txt") if loadgen and (acc_dir / "mlperf_log_detail.txt").is_file() else None
    for scenario in scenarios(r.metrics):
        res = f"{base}/results/{sysname}/{model}/{scenario}"
        detail = validity = reason = None
        accuracy = accuracy_text(r)
        if loadgen:
            lg = _loadgen_dir(r, scenario)
            w.copy(f"{res}/performance/run_1/mlperf_log_summary.txt", lg / "mlperf_log_summary.txt")
            w.copy(f"{res}/performance/run_1/mlperf_log_detail.txt", lg / "mlperf_log_detail.txt")
            detail = _detail(lg / "mlperf_log_detail.txt")
            validity = _validity(lg / "mlperf_log_summary.txt")
            # accuracy/ holds exactly ACCURACY_FILES; the log as truncate_accuracy_log.py leaves it.
            for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
                w.copy(f"{res}/accuracy/{name}", acc_dir / name)
            full = acc_dir / "mlperf_log_accuracy.json"
            if not full.is_file():
                raise ExportError("mlperf_log_accuracy.json is missing", file=full, field="loadgen_logs")
            data = full.read_bytes()
            w.text(f"{res}/accuracy/mlperf_log_accuracy.json", truncated_accuracy_log(data.decode("utf-8")))
            accuracy += f"\nhash={hashlib.sha256(data).hexdigest()}\n"
        else:
            reason = (f"The run used the built-in timing loop, not MLPerf LoadGen (metrics.json: driver {r.metrics.driver!r}); "
                      "its figures are in the source's metrics.json, and no LoadGen log is written in their place.")
        w.text(f"{res}/accuracy/accuracy.txt", accuracy)
        conf = user_conf(model, scenario, detail, r)
        problems = nonconformities(r, scenario, detail, acc_detail if loadgen else None, conf)
        w.text(f"{res}/user.conf", conf)
        w.text(f"{res}/README.md", _scenario_readme(r, sysname, model, scenario, reason, validity, problems))
        w.json(f"{res}/measurements.json", measurements_json(r))
        entries.append(ScenarioEntry(str(r.source), sysname, model, scenario, reason is None, reason, r.accuracy, r.signed,
                                     tuple(problems)))
    return entries


def conformance_text(entries: Sequence[ScenarioEntry], skipped: Sequence[str]) -> str:
    lines = [f"# MLPerf Inference {ROUND} conformance of this tree, as request-pack export checks it",
             "# (MLCommons' submission checker is the judge; these are the rules it applies that these results can be",
             "#  checked against here. A line per rule not met.)", ""]
    for e in entries:
        head = f"{e.system}/{e.model}/{e.scenario}"
        if e.nonconformities:
            lines += [f"{head}: NOT conformant"] + [f"  - {p}" for p in e.nonconformities]
        else:
            lines.append(f"{head}: conformant")
    for why in skipped:
        lines.append(f"not exported: {why}")
    return "\n".join(lines) + "\n"


def export_mlperf(sources: Sequence[Path], out: Path, opts: ExportOptions = ExportOptions()) -> ExportReport:
    """Steps 1-3 of the module doc for every source; the tree appears at ``out`` only when complete."""
    if not sources:
        raise ExportError("give at least one bundle or run directory", field="SOURCES")
    if opts.status not in ("available", "preview", "rdi"):
        raise ExportError(f"{opts.status!r} is not available, preview or rdi", field="--status")
    if opts.system_type not in ("edge", "datacenter"):
        raise ExportError(f"{opts.system_type!r} is not edge or datacenter", field="--system-type")
    submitter = _safe_component(opts.submitter)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError("exists and is not an empty directory", file=out, field="--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="request-pack-export-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "src").mkdir()
        results = [_open(Path(s), opts, scratch / "src") for s in sources]
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        staging.chmod(0o755)
        try:
            w = _Writer(staging)
            base = f"{DIVISION}/{submitter}"
            entries: list[ScenarioEntry] = []
            skipped: list[str] = []
            seen: dict[tuple[str, str, str], str] = {}
            systems: dict[str, dict] = {}
            mapping: dict[str, str] = {}
            for r in results:
                if not scenarios(r.metrics):
                    skipped.append(f"{r.source}: no performance scenario ran"
                                   + (f" ({r.metrics.performance_skipped})" if r.metrics.performance_skipped else ""))
                    continue
                sysname, model = system_name(r), model_name(r)
                desc = systems_json(r, opts, sysname)
                n = 1
                while sysname in systems and systems[sysname] != {**desc, "system_name": sysname}:
                    n += 1  # same name, other hardware or software: a system of its own
                    sysname = f"{system_name(r)}_{n}"
                systems[sysname] = {**desc, "system_name": sysname}
                for sc in scenarios(r.metrics):
                    key = (sysname, model, sc)
                    if key in seen:
                        raise ExportError(f"{model}/{sc} on {sysname} also comes from {seen[key]}; export one result per "
                                          "system, model and scenario", file=r.source)
                    seen[key] = str(r.source)
                mapping[model] = CLOSED_BENCHMARK
                entries += _write_result(w, r, base, sysname)
            for sysname, desc in systems.items():
                w.json(f"{base}/systems/{sysname}.json", desc)
            w.json(f"{base}/model_mapping.json", mapping)
            w.text(CONFORMANCE, conformance_text(entries, skipped))
            if out.exists():
                out.rmdir()  # empty, checked above; rename needs the name free
            os.replace(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("wrote %d files under %s", len(w.files), out)
    return ExportReport(out, DIVISION, submitter, tuple(entries), tuple(sorted(w.files)), tuple(skipped))
