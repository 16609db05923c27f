"""A real submission-mode harness run (tiny fixed-seed net, real onnxruntime, real LoadGen 6.0.17) on a generated
data set of 1,040 distinct JPEGs, exported and checked against MLCommons' v6.1 checker rules one by one.

The data set: the shared sample's 200 images, each re-encoded at several JPEG qualities and crops, so every
file is a distinct image (more than the 1024 performance samples the rules ask for; not the 50,000-image
validation set, which the export must say). MLPerf's 600 s per scenario does not fit a test suite: the run
lowers the minimum durations and the Offline sample count through the harness's test-only
``--user-conf-override``, and the export must flag exactly that (and the data-set size), nothing else.

Each test names the checker's rule (tools/submission/submission_checker in mlcommons/inference, v6.1).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("mlperf_loadgen")

from packager.harness.scenarios import OFFICIAL_SEEDS  # noqa: E402
from packager.harness.tinynet import build  # noqa: E402
from packager.mllog import read_detail  # noqa: E402
from packager.results import Metrics  # noqa: E402
from packager.scoreboard.mlperf import ExportOptions, export_mlperf  # noqa: E402

IMAGES = 1040
OVERRIDES = ("*.SingleStream.min_duration = 1000", "*.MultiStream.min_duration = 1000", "*.Offline.min_duration = 1000",
             "resnet50.Offline.min_query_count = 2048")
SCENARIOS = {"SingleStream", "MultiStream", "Offline"}
SYSTEM_DESC_REQUIRED_FIELDS = [
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect", "accelerator_interconnect",
    "accelerator_interconnect_topology", "accelerator_memory_configuration", "accelerator_on-chip_memories",
    "cooling", "hw_notes", "sw_notes", "host_network_card_count", "system_type_detail",
]
SYSTEM_DESC_MEANINGFUL = [
    "division", "submitter", "system_type", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_memory_configuration",
    "host_storage_capacity", "host_storage_type", "host_networking", "host_network_card_count",
    "host_networking_topology", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "accelerator_host_interconnect", "accelerator_memory_configuration", "accelerator_interconnect", "cooling",
    "framework", "operating_system", "other_software_stack",
]
SYSTEM_IMP_REQUIRED_FILES = ["input_data_types", "retraining", "starting_weights_filename", "weight_data_types", "weight_transformations"]
REQUIRED_ACC_FILES = ["mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "mlperf_log_accuracy.json"]
REQUIRED_PERF_FILES = ["mlperf_log_summary.txt", "mlperf_log_detail.txt"]
ACC_PATTERN = r"^(?:\{\"accuracy|accuracy)[\": ]*=?\s*([\d\.]+).*"
MAX_ACCURACY_LOG_SIZE = 10 * 1024


def _generate(sample: Path, dest: Path, count: int) -> None:
    """labels-tsv data set of ``count`` distinct JPEGs: each sample image re-encoded at another quality and crop."""
    from PIL import Image

    header, *rows = (sample / "labels.tsv").read_text().splitlines()
    (dest / "images").mkdir(parents=True)
    out = [header]
    for k in range(count):
        c = rows[k % len(rows)].split("\t")
        variant = k // len(rows)
        with Image.open(sample / "images" / c[0]) as im:
            im = im.convert("RGB")
            w, h = im.size
            im = im.crop((variant, variant, w - variant, h - variant)).resize((96, 96))
            name = f"v{variant}_{c[0]}"
            im.save(dest / "images" / name, "JPEG", quality=60 + 7 * variant)
        out.append("\t".join([name, *c[1:]]))
    (dest / "labels.tsv").write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_sample):
    tmp = tmp_path_factory.mktemp("submission")
    data = tmp / "data"
    _generate(shared_sample, data, IMAGES)
    model = build(tmp / "tiny.onnx", size=224)
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps({
        "name": "tiny-submission",
        "preprocessing": {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "run": {"batch_sizes": [8], "warmup": 2, "scenarios": ["SingleStream", "MultiStream", "Offline"]},
        "framework": {"name": "onnxruntime", "options": {"threads": 2}},
        "dataset": {"layout": "labels-tsv", "note": f"{IMAGES} generated JPEGs (the 200-image sample re-encoded), "
                                                   "not the validation set"},
    }))
    argv = [sys.executable, "-m", "packager.harness", "--config", str(cfg), "--model", str(model), "--dataset", str(data),
            "--out", str(tmp / "out"), "--cache", str(tmp / "cache"), "--stage", "full", "--mode", "submission"]
    for line in OVERRIDES:
        argv += ["--user-conf-override", line]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    report = export_mlperf([tmp / "out"], tmp / "tree", ExportOptions(labels=data / "labels.tsv", submitter="Example Org"))
    return tmp / "out", report


def _scenario_dirs(report):
    root = report.root / "open" / "Example-Org"
    return root, [root / "results" / e.system / e.model / e.scenario for e in report.entries]


def test_the_run_records_submission_mode(run):
    out, _ = run
    m = Metrics.model_validate_json((out / "metrics.json").read_text())
    assert m.measurement is not None and m.measurement.key == "submission/native/loadgen"
    assert m.accuracy.samples == IMAGES  # accuracy over the whole data set


def test_layout_v61(run):
    """SYSTEM_PATH, SRC_PATH (src/), MEASUREMENTS_PATH (results/.../measurements.json), no measurements/ folder."""
    _, report = run
    root, dirs = _scenario_dirs(report)
    assert sorted(p.name for p in root.iterdir()) == ["model_mapping.json", "results", "src", "systems"]
    assert json.loads((root / "model_mapping.json").read_text()) == {"tiny-submission": "resnet"}
    assert {d.name for d in dirs} == SCENARIOS
    for d in dirs:
        assert (root / "systems" / f"{d.parent.parent.name}.json").is_file()
        assert sorted(p.name for p in d.iterdir()) == ["README.md", "accuracy", "measurements.json", "performance", "user.conf"]
        assert sorted(p.name for p in (d / "performance" / "run_1").iterdir()) == sorted(REQUIRED_PERF_FILES)
        assert sorted(p.name for p in (d / "accuracy").iterdir()) == sorted(REQUIRED_ACC_FILES)  # exactly these four


def test_system_description_fields_and_types(run):
    """SYSTEM_DESC_REQUIRED_FIELDS present, SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS non-empty."""
    _, report = run
    root, _ = _scenario_dirs(report)
    (path,) = (root / "systems").glob("*.json")
    desc = json.loads(path.read_text())
    assert [f for f in SYSTEM_DESC_REQUIRED_FIELDS if f not in desc] == []
    assert [f for f in SYSTEM_DESC_MEANINGFUL if not desc[f]] == []
    assert desc["accelerators_per_node"] == "0"  # a string: the number 0 reads as empty
    assert desc["division"] == "open" and desc["submitter"] == "Example-Org"  # submitter_check: the directory's name and desc["status"] in ("available", "preview", "rdi")
    assert desc["system_type"] in ("datacenter", "edge", "datacenter,edge", "edge,datacenter")


def test_measurements_json_and_required_files(run):
    """SYSTEM_IMP_REQUIRED_FILES (non-empty strings), REQUIRED_MEASURE_FILES (user.conf, README.md, non-empty)."""
    out, report = run
    _, dirs = _scenario_dirs(report)
    for d in dirs:
        imp = json.loads((d / "measurements.json").read_text())
        assert all(isinstance(imp[k], str) and imp[k] for k in SYSTEM_IMP_REQUIRED_FILES)
        assert (d / "README.md").stat().st_size > 0
        sub = d.name if d.name in ("SingleStream", "MultiStream") else "Offline-b8"
        assert (d / "user.conf").read_bytes() == (out / "loadgen" / sub / "user.conf").read_bytes()  # the run's own


def test_accuracy_log_truncated_and_hashed(run):
    """accuracy_result_check's hash= line; accuracy_json_check's 10 KiB limit; truncate_accuracy_log's cut."""
    out, report = run
    _, dirs = _scenario_dirs(report)
    full = (out / "loadgen" / "Accuracy" / "mlperf_log_accuracy.json").read_bytes()
    assert len(full) > MAX_ACCURACY_LOG_SIZE  # the full log stays in the outputs (and the bundle)
    text = full.decode()
    for d in dirs:
        acc = (d / "accuracy" / "accuracy.txt").read_text().splitlines()
        assert re.match(ACC_PATTERN, acc[0])
        hashes = [m.group(1) for line in acc if (m := re.match(r"^hash=([\w\d]+)$", line))]
        assert hashes == [hashlib.sha256(full).hexdigest()]
        cut = (d / "accuracy" / "mlperf_log_accuracy.json").read_text()
        assert cut == text[:4096] + "\n\n...\n\n" + text[-4096:]
        assert (d / "accuracy" / "mlperf_log_accuracy.json").stat().st_size <= MAX_ACCURACY_LOG_SIZE


def test_seeds_sample_counts_and_no_loadgen_errors(run):
    """seeds_check, performance_sample_count_check, latency_check (early stopping), loadgen_errors_check."""
    _, report = run
    _, dirs = _scenario_dirs(report)
    for d in dirs:
        for log in (d / "performance" / "run_1" / "mlperf_log_detail.txt", d / "accuracy" / "mlperf_log_detail.txt"):
            det = read_detail(log)
            assert {k: det[f"effective_{k}"] for k in OFFICIAL_SEEDS} == OFFICIAL_SEEDS, log
            assert det.get("num_errors", 0) == 0, log
        perf = read_detail(d / "performance" / "run_1" / "mlperf_log_detail.txt")
        assert perf["effective_performance_sample_count"] >= 1024
        assert perf["effective_scenario"] == d.name
        if d.name in ("SingleStream", "MultiStream"):
            assert perf["early_stopping_met"] is True
        if d.name == "MultiStream":
            assert perf["effective_samples_per_query"] == 8 and perf["effective_min_query_count"] == 662
        assert read_detail(d / "accuracy" / "mlperf_log_detail.txt")["qsl_reported_total_count"] == IMAGES


def test_what_cannot_be_met_here_is_flagged_and_nothing_else(run):
    """min_duration_check (the test-only 1 s) and dataset_check (1,040 images, not 50,000) are the only failures."""
    _, report = run
    text = (report.root / "conformance.txt").read_text()
    for e in report.entries:
        rules = sorted(re.findall(r"\[(\w+)\]", " ".join(e.nonconformities)))
        assert rules == ["dataset_check", "min_duration_check"], e.nonconformities
        assert any("test-only overrides" in p for p in e.nonconformities)
        assert not any(p.startswith("quick-mode") for p in e.nonconformities)
        assert f"{e.system}/{e.model}/{e.scenario}: NOT conformant" in text


# --- MultiStream -------------------------------------------------------------------------------------------


def test_multistream_metric_and_records(run):
    """MLPerf's MultiStream result is LoadGen's early-stopping p99 per-query latency (RESULT_FIELD_NEW: early_stopping_
    latency_ms); the README gives it, says a query is 8 images, and the signed records give back LoadGen's log."""
    from packager import querylog

    out, report = run
    _, dirs = _scenario_dirs(report)
    (d,) = [d for d in dirs if d.name == "MultiStream"]
    perf = read_detail(d / "performance" / "run_1" / "mlperf_log_detail.txt")
    m = Metrics.model_validate_json((out / "metrics.json").read_text()).multistream
    assert m is not None and m.early_stopping_p99_s == perf["early_stopping_latency_ms"] * 1e-9
    readme = (d / "README.md").read_text()
    assert f"early-stopping p99 estimate (MLPerf's metric) {m.early_stopping_p99_s * 1e3:.3f} ms" in readme
    assert "not comparable with SingleStream" in readme
    assert querylog.differences(querylog.read(out / m.queries), perf) == {}
    assert "resnet50.MultiStream.target_latency = " in (d / "user.conf").read_text()


def test_multistream_rules_accept_a_conformant_run_and_name_what_is_not(run):
    """The rules, applied to this run's real logs: with MLPerf's duration and the validation set (the two things a
    test cannot have) every MultiStream rule passes; each departure is named by its rule."""
    from packager.scoreboard.mlperf_rules import nonconformities
    from packager.scoreboard.mlperf_source import ExportOptions as Opts
    from packager.scoreboard.mlperf_source import open_source

    out, report = run
    _, dirs = _scenario_dirs(report)
    (d,) = [d for d in dirs if d.name == "MultiStream"]
    perf = read_detail(d / "performance" / "run_1" / "mlperf_log_detail.txt")
    acc = read_detail(d / "accuracy" / "mlperf_log_detail.txt")
    r = open_source(out, Opts(labels=report.root.parent / "data" / "labels.tsv"), out.parent)
    full = {**perf, "effective_min_duration_ms": 600_000}
    whole = {**acc, "qsl_reported_total_count": 50_000, "effective_accuracy_sample_count": 50_000}
    assert nonconformities(r, "MultiStream", full, whole, "# the run's user.conf\n") == []
    cases = {
        "[samples_per_query]": {**full, "effective_samples_per_query": 4},
        "[latency_check]": {**full, "early_stopping_met": False},
        "[seeds_check]": {**full, "effective_schedule_rng_seed": 0},
        "[performance_sample_count_check]": {**full, "effective_performance_sample_count": 512},
    }
    for rule, detail in cases.items():
        assert [p for p in nonconformities(r, "MultiStream", detail, whole, "") if rule in p], rule
    datacenter = nonconformities(r, "MultiStream", full, whole, "", "datacenter")
    assert [p for p in datacenter if "[required-scenarios-edge]" in p]
    assert nonconformities(r, "SingleStream", full, whole, "", "datacenter") == []


def test_export_refuses_multistream_records_that_do_not_give_the_claim(run, tmp_path):
    import shutil

    from packager.errors import MetricsMismatch

    out, report = run
    copy = Path(shutil.copytree(out, tmp_path / "out"))
    q = copy / "loadgen" / "MultiStream" / "queries.tsv"
    lines = q.read_text().splitlines()
    lines[1] = lines[1].split("\t")[0] + "\t1"  # the first query made 1 ns fast
    q.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetricsMismatch, match=r"MultiStream: .*queries\.tsv gives result_min_query_latency_ns 1"):
        export_mlperf([copy], tmp_path / "tree", ExportOptions(labels=report.root.parent / "data" / "labels.tsv"))
