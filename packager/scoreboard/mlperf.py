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
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packager.results import PREDICTIONS_NAME, Accuracy
from packager.scoreboard.mlperf_rules import (
    CLOSED_BENCHMARK,
    CONFORMANCE,
    DIVISION,
    ROUND,
    VALIDATION_SET_SIZE,
    nonconformities,
    truncated_accuracy_log,
    user_conf,
)
from packager.scoreboard.mlperf_source import (
    LOCK,
    MANIFEST,
    UNKNOWN,
    ExportError,
    ExportOptions,
    Result,
    best_offline,
    detail_of,
    loadgen_dir,
    model_name,
    open_source,
    safe_component,
    scenarios,
    system_name,
    uses_loadgen,
    validity_of,
)

__all__ = ["CONFORMANCE", "ROUND", "ExportError", "ExportOptions", "ExportReport", "ScenarioEntry", "export_mlperf"]

log = logging.getLogger(__name__)


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


# --- 3. writing ---------------------------------------------------------------------


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else UNKNOWN


def systems_json(r: Result, opts: ExportOptions, name: str) -> dict:
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
        "submitter": safe_component(opts.submitter),
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


def measurements_json(r: Result) -> dict:
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


def accuracy_text(r: Result) -> str:
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


def _scenario_readme(r: Result, sysname: str, model: str, scenario: str, perf_reason: str | None, validity: str | None,
                     problems: Sequence[str] = ()) -> str:
    m = r.metrics
    if scenario == "SingleStream" and m.latency:
        figure = (f"SingleStream latency: p50 {m.latency.p50_s * 1e3:.3f} ms, p90 {m.latency.p90_s * 1e3:.3f} ms, "
                  f"p99 {m.latency.p99_s * 1e3:.3f} ms over {m.latency.count} queries")
    elif scenario == "MultiStream" and m.multistream:
        ms = m.multistream
        est = (f"{ms.early_stopping_p99_s * 1e3:.3f} ms" if ms.early_stopping_p99_s is not None
               else "none (fewer queries than early stopping needs)")
        how = f"one batch of {ms.samples_per_query}" if ms.batch_size == ms.samples_per_query else "sample by sample"
        figure = (f"MultiStream per-query latency ({ms.samples_per_query} samples per query, run as {how}): "
                  f"p99 {ms.p99_s * 1e3:.3f} ms, LoadGen's early-stopping p99 estimate (MLPerf's metric) {est}, "
                  f"p50 {ms.p50_s * 1e3:.3f} ms over {ms.count} queries; a query's latency, not an image's: not "
                  "comparable with SingleStream")
    else:
        best = best_offline(m)
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
        + ("LoadGen AccuracyOnly run (Offline mode, every sample once); the same run serves every scenario. "
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


def _code_readme(r: Result, model: str) -> str:
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


def _write_result(w: _Writer, r: Result, base: str, sysname: str, system_type: str) -> list[ScenarioEntry]:
    model = model_name(r)
    entries = []
    for rel in (MANIFEST, LOCK):
        if (r.root / rel).is_file() and f"{base}/src/{model}/{rel}" not in w.files:
            w.copy(f"{base}/src/{model}/{rel}", r.root / rel, field_name=rel)
    if f"{base}/src/{model}/README.md" not in w.files:
        w.text(f"{base}/src/{model}/README.md", _code_readme(r, model))
    loadgen = uses_loadgen(r.metrics)
    acc_dir = r.root / "loadgen" / "Accuracy"
    acc_detail = detail_of(acc_dir / "mlperf_log_detail.txt") if loadgen and (acc_dir / "mlperf_log_detail.txt").is_file() else None
    for scenario in scenarios(r.metrics):
        res = f"{base}/results/{sysname}/{model}/{scenario}"
        detail = validity = reason = None
        accuracy = accuracy_text(r)
        if loadgen:
            lg = loadgen_dir(r, scenario)
            w.copy(f"{res}/performance/run_1/mlperf_log_summary.txt", lg / "mlperf_log_summary.txt")
            w.copy(f"{res}/performance/run_1/mlperf_log_detail.txt", lg / "mlperf_log_detail.txt")
            detail = detail_of(lg / "mlperf_log_detail.txt")
            validity = validity_of(lg / "mlperf_log_summary.txt")
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
        problems = nonconformities(r, scenario, detail, acc_detail if loadgen else None, conf, system_type)
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
    submitter = safe_component(opts.submitter)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError("exists and is not an empty directory", file=out, field="--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="request-pack-export-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "src").mkdir()
        results = [open_source(Path(s), opts, scratch / "src") for s in sources]
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
                entries += _write_result(w, r, base, sysname, opts.system_type)
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
