"""``request-pack export --mlperf`` on result directories the real harness made (tiny fixed-seed net, real
onnxruntime, real LoadGen and the built-in driver, real images of the shared sample), and on signed bundles.

The tiny net answers at random, so the run's dataset gets a labels file in which
every other image is labelled with the class the net predicts for it (found by a
first, probe run): the accuracy then is well above zero and known in advance.

The layout and field lists checked here are MLCommons' (v6.1 round) as the
submission checker reads them: ``SYSTEM_PATH``, ``MEASUREMENTS_PATH``, ``SRC_PATH``,
``PERFORMANCE_LOG_PATH``, ``ACCURACY_*_PATH``, ``REQUIRED_MEASURE_FILES``,
``REQUIRED_ACC_FILES``, ``SYSTEM_DESC_REQUIRED_FIELDS``,
``SYSTEM_IMP_REQUIRED_FILES`` and the ``acc`` pattern of ``ACC_PATTERN``, in
``tools/submission/submission_checker/constants.py`` of mlcommons/inference.
The checker itself is not on PyPI (only its repository carries it), so these
tests check its rules rather than run it, one by one; each test names the checker's rule.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from _bundle_fixture import make_result_dir  # noqa: E402

from packager.errors import BadInput, MetricsMismatch, SignatureError, UnsafeArchive  # noqa: E402
from packager.harness.tinynet import build  # noqa: E402
from packager.results import Metrics, read_predictions  # noqa: E402
from packager.scoreboard.mlperf import ExportError, ExportOptions, export_mlperf  # noqa: E402

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
SYSTEM_IMP_REQUIRED_FIELDS = ["input_data_types", "retraining", "starting_weights_filename", "weight_data_types", "weight_transformations"]
REQUIRED_MEASURE_FILES = ["user.conf", "README.md"]
REQUIRED_ACC_FILES = ["mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "mlperf_log_accuracy.json"]
REQUIRED_PERF_FILES = ["mlperf_log_summary.txt", "mlperf_log_detail.txt"]
ACC_PATTERN = r"^(?:\{\"accuracy|accuracy)[\": ]*=?\s*([\d\.]+).*"

N = 16
CONFIG = {
    "preprocessing": {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "run": {"batch_sizes": [1, 4], "warmup": 2, "scenarios": ["SingleStream", "Offline"]},
    "framework": {"name": "onnxruntime", "options": {"threads": 1}},
    "dataset": {"layout": "labels-tsv"},
}


def _harness(tmp: Path, name: str, model: Path, dataset: Path, out: Path, *args: str) -> None:
    cfg = tmp / f"{name}.json"
    cfg.write_text(json.dumps({**CONFIG, "name": name}))
    argv = [sys.executable, "-m", "packager.harness", "--config", str(cfg), "--model", str(model), "--dataset", str(dataset),
            "--out", str(out), "--cache", str(tmp / "cache"), "--samples", str(N), "--queries", "24", "--offline-samples", "24", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_sample):
    """(dataset, loadgen run, builtin run): two real harness runs on a 16-image dataset with half-rigged labels."""
    tmp = tmp_path_factory.mktemp("export")
    model = build(tmp / "tiny.onnx")
    _harness(tmp, "probe", model, shared_sample, tmp / "probe", "--driver", "builtin", "--scenarios", "Offline", "--batch-sizes", "8")
    answer = {p.id: p.top5[0] for p in read_predictions(tmp / "probe" / "predictions.jsonl")}
    data = tmp / "data"
    (data / "images").mkdir(parents=True)
    header, *rows = (shared_sample / "labels.tsv").read_text().splitlines()
    cols = header.split("\t")
    out_rows = []
    for k, row in enumerate(rows[:N]):
        c = row.split("\t")
        shutil.copyfile(shared_sample / "images" / c[0], data / "images" / c[0])
        if k % 2 == 0:
            c[cols.index("class_index")] = str(answer[c[0]])
        out_rows.append("\t".join(c))
    (data / "labels.tsv").write_text("\n".join([header, *out_rows]) + "\n")
    _harness(tmp, "tiny-loadgen", model, data, tmp / "lg")
    _harness(tmp, "tiny-builtin", model, data, tmp / "bi", "--driver", "builtin")
    return data, tmp / "lg", tmp / "bi"


def _count(run: Path, labels: Path) -> tuple[int, int, int]:
    """Top-1/top-5 hits counted here, independently of packager.results."""
    truth = {}
    for line in labels.read_text().splitlines()[1:]:
        c = line.split("\t")
        truth[c[0]] = int(c[2])
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    return (sum(p["top5"][0] == truth[p["id"]] for p in preds), sum(truth[p["id"]] in p["top5"] for p in preds), len(preds))


@pytest.fixture(scope="module")
def tree(runs, tmp_path_factory):
    data, lg, bi = runs
    out = tmp_path_factory.mktemp("tree") / "submission"
    report = export_mlperf([lg, bi], out, ExportOptions(labels=data / "labels.tsv", submitter="Example Org"))
    return report


def test_tree_has_the_checkers_layout_and_every_file_it_names(tree, runs):
    root = tree.root / "open" / "Example-Org"
    assert sorted(p.name for p in tree.root.iterdir()) == ["conformance.txt", "open"]  # division is open, never closed
    on_disk = sorted(str(p.relative_to(tree.root)) for p in tree.root.rglob("*") if p.is_file())
    assert on_disk == list(tree.files)
    systems = [p.stem for p in (root / "systems").glob("*.json")]
    assert len(systems) == 1 and systems == [p.name for p in (root / "results").iterdir()]
    system = systems[0]
    assert json.loads((root / "model_mapping.json").read_text()) == {"tiny-loadgen": "resnet", "tiny-builtin": "resnet"}
    for model in ("tiny-loadgen", "tiny-builtin"):
        assert (root / "src" / model / "README.md").is_file()  # SRC_PATH v6.1: src/, not code/
        assert sorted(p.name for p in (root / "results" / system / model).iterdir()) == ["Offline", "SingleStream"]
        for scenario in ("SingleStream", "Offline"):
            meas = res = root / "results" / system / model / scenario  # MEASUREMENTS_PATH v6.1: in the scenario
            for f in REQUIRED_MEASURE_FILES + ["measurements.json"]:
                assert (meas / f).stat().st_size > 0, meas / f
            imp = json.loads((meas / "measurements.json").read_text())
            assert all(isinstance(imp[k], str) and imp[k] for k in SYSTEM_IMP_REQUIRED_FIELDS) and imp["input_data_types"] == "fp32"
            if model == "tiny-loadgen":
                assert sorted(p.name for p in (res / "performance" / "run_1").iterdir()) == sorted(REQUIRED_PERF_FILES)
                assert sorted(p.name for p in (res / "accuracy").iterdir()) == sorted(REQUIRED_ACC_FILES)  # exactly
            else:  # nothing stands in for logs LoadGen never wrote
                assert not (res / "performance").exists()
                assert sorted(p.name for p in (res / "accuracy").iterdir()) == ["accuracy.txt"]
                assert "built-in timing loop" in (meas / "README.md").read_text()
                assert "No MLPerf LoadGen ran" in (meas / "user.conf").read_text()
    assert {(e.model, e.scenario) for e in tree.without_performance_logs} == {("tiny-builtin", "SingleStream"), ("tiny-builtin", "Offline")}
    assert all(e.reason and "LoadGen" in e.reason for e in tree.without_performance_logs)
    assert not (root / "measurements").exists() and not (root / "code").exists()


def test_quick_mode_results_are_flagged_never_passed_off(tree):
    """Quick mode is never an MLPerf submission: conformance.txt, the README and the report say so, per rule."""
    assert len(tree.nonconformant) == len(tree.entries) == 4
    text = (tree.root / "conformance.txt").read_text()
    for e in tree.entries:
        assert any(p.startswith("quick-mode run") for p in e.nonconformities)
        assert f"{e.system}/{e.model}/{e.scenario}: NOT conformant" in text
        readme = (tree.root / "open" / "Example-Org" / "results" / e.system / e.model / e.scenario / "README.md").read_text()
        assert "Not conformant with MLPerf Inference v6.1" in readme and "quick-mode run" in readme
    lg = {e.scenario: e.nonconformities for e in tree.entries if e.model == "tiny-loadgen"}
    for rule in ("[seeds_check]", "[min_duration_check]", "[performance_sample_count_check]", "[dataset_check]"):
        assert any(rule in p for p in lg["Offline"]), rule


def test_systems_json_has_every_required_field_from_system_json(tree, runs):
    root = tree.root / "open" / "Example-Org"
    (desc_path,) = (root / "systems").glob("*.json")
    desc = json.loads(desc_path.read_text())
    assert [f for f in SYSTEM_DESC_REQUIRED_FIELDS if f not in desc] == []
    assert all(desc[f] not in ("", None) for f in SYSTEM_DESC_REQUIRED_FIELDS)
    system = json.loads((runs[1] / "system.json").read_text())
    assert desc["division"] == "open" and desc["submitter"] == "Example-Org"  # submitter_check: the directory's name and desc["system_name"] == desc_path.stem
    assert desc["status"] in ("available", "preview", "rdi") and desc["system_type"] in ("edge", "datacenter")
    assert desc["host_processor_model_name"] == (system["cpu_model"] or "unknown")
    assert desc["host_processor_core_count"] == system["cores"]
    assert desc["operating_system"].startswith(system["os"]) and system["kernel"] in desc["operating_system"]
    assert desc["framework"].startswith(f"onnxruntime {system['frameworks']['onnxruntime']}")
    assert f"mlperf_loadgen {system['frameworks']['mlperf_loadgen']}" in desc["other_software_stack"]
    assert desc["host_storage_type"] == "unknown"  # nothing in a run observes it
    # accelerators_per_node: the checker's meaningful-response test reads the number 0 as empty.
    assert desc["accelerators_per_node"] == "0" and desc["accelerator_model_name"] == "N/A"


def test_accuracy_txt_is_what_the_predictions_give(tree, runs):
    data, lg, bi = runs
    root = tree.root / "open" / "Example-Org" / "results"
    for run, model in ((lg, "tiny-loadgen"), (bi, "tiny-builtin")):
        top1, top5, n = _count(run, data / "labels.tsv")
        assert n == N and top1 >= N // 2  # the rigged half at least
        for scenario in ("SingleStream", "Offline"):
            (acc,) = root.glob(f"*/{model}/{scenario}/accuracy/accuracy.txt")
            text = acc.read_text()
            m = re.match(ACC_PATTERN, text.splitlines()[0])
            assert m and float(m.group(1)) == pytest.approx(100 * top1 / n, abs=5e-4)
            assert f"good={top1}, total={n}" in text and f"good={top5}, total={n}" in text
            assert "NOT the 50,000-image ILSVRC2012 validation set" in text


def test_loadgen_logs_are_copied_unchanged_and_user_conf_reads_them_back(tree, runs):
    _, lg, _ = runs
    root = tree.root / "open" / "Example-Org"
    (res,) = root.glob("results/*/tiny-loadgen/SingleStream")
    for f in REQUIRED_PERF_FILES:
        assert (res / "performance" / "run_1" / f).read_bytes() == (lg / "loadgen" / "SingleStream" / f).read_bytes()
    for f in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        assert (res / "accuracy" / f).read_bytes() == (lg / "loadgen" / "Accuracy" / f).read_bytes()
    m = Metrics.model_validate_json((lg / "metrics.json").read_text())
    best = max(m.throughput, key=lambda t: t.images_per_s)
    (off,) = root.glob("results/*/tiny-loadgen/Offline")
    assert (off / "performance" / "run_1" / "mlperf_log_detail.txt").read_bytes() == \
        (lg / "loadgen" / f"Offline-b{best.batch_size}" / "mlperf_log_detail.txt").read_bytes()
    (conf,) = root.glob("results/*/tiny-loadgen/SingleStream/user.conf")
    assert "tiny-loadgen.SingleStream.min_query_count = 24" in conf.read_text()


def test_a_changed_prediction_is_a_metrics_mismatch(runs, tmp_path):
    data, lg, bi = runs
    for run in (lg, bi):
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        lines = (copy / "predictions.jsonl").read_text().splitlines(keepends=True)
        first = json.loads(lines[0])  # rigged: its top-1 is its label; change it and the count drops
        first["top5"] = [(first["top5"][0] + 1) % 1000] + first["top5"][1:]
        lines[0] = json.dumps(first) + "\n"
        (copy / "predictions.jsonl").write_text("".join(lines))
        with pytest.raises(MetricsMismatch, match="accuracy claims"):
            export_mlperf([copy], tmp_path / f"out-{run.name}", ExportOptions(labels=data / "labels.tsv"))
        assert not (tmp_path / f"out-{run.name}").exists()  # nothing half-written


def test_loadgen_accuracy_log_must_agree_with_the_predictions(runs, tmp_path):
    """A wrong answer swapped for another wrong answer keeps the counts, but LoadGen logged the original."""
    data, lg, _ = runs
    copy = tmp_path / "lg"
    shutil.copytree(lg, copy)
    lines = (copy / "predictions.jsonl").read_text().splitlines(keepends=True)
    k = next(i for i, x in enumerate(lines) if i % 2 == 1)  # an image with its true label: the tiny net misses it
    p = json.loads(lines[k])
    assert p["top5"][0] != 999
    p["top5"] = [999] + [c for c in p["top5"][1:] if c != 999][:3] + [p["top5"][0]]
    lines[k] = json.dumps(p) + "\n"
    (copy / "predictions.jsonl").write_text("".join(lines))
    with pytest.raises(MetricsMismatch, match="qsl_idx"):
        export_mlperf([copy], tmp_path / "out", ExportOptions(labels=data / "labels.tsv"))


def test_bad_inputs_name_the_file_and_field(runs, tmp_path):
    data, lg, bi = runs
    with pytest.raises(ExportError, match=r"labels\.tsv: --labels: no ground truth"):
        export_mlperf([bi], tmp_path / "a")
    broken = tmp_path / "broken"
    shutil.copytree(bi, broken)
    m = json.loads((broken / "metrics.json").read_text())
    m["accuracy"]["top1"] = "high"
    (broken / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match=r"metrics\.json: accuracy\.top1: "):
        export_mlperf([broken], tmp_path / "b", ExportOptions(labels=data / "labels.tsv"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ExportError, match="--out: exists and is not an empty directory"):
        export_mlperf([bi], tmp_path / "full", ExportOptions(labels=data / "labels.tsv"))
    with pytest.raises(ExportError, match="also comes from"):
        export_mlperf([bi, bi], tmp_path / "c", ExportOptions(labels=data / "labels.tsv"))
    assert issubclass(ExportError, BadInput) and ExportError.return_code == 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", "export", *args], capture_output=True, text=True, timeout=120)


def test_signed_bundles_are_verified_first_with_distinct_exit_codes(tmp_path):
    from packager.bundle.keys import generate_keypair
    from packager.bundle.sign import sign_result_dir

    result = make_result_dir(tmp_path / "result")
    key = generate_keypair(tmp_path / "keys", "evaluator")
    other = generate_keypair(tmp_path / "keys", "stranger")
    bundle = sign_result_dir(result, key.private_path, archive_path=tmp_path / "r.bundle.tar.gz").archive

    ok = _cli("--mlperf", str(bundle), "--out", str(tmp_path / "ok"), "--trust", str(key.public_path))
    assert ok.returncode == 0, ok.stderr
    assert "no performance logs" in ok.stdout and "built-in" in ok.stdout
    assert "not conformant" in ok.stdout and "quick-mode run" in ok.stdout and "conformance.txt" in ok.stdout
    (readme,) = (tmp_path / "ok").glob("open/request-pack/results/*/*/Offline/README.md")
    assert "signed bundle, verified, signer " + key.keyid[:16] in readme.read_text()
    (code,) = (tmp_path / "ok").glob("open/request-pack/src/*")
    assert {p.name for p in code.iterdir()} == {"README.md", "request.yaml", "request.lock"}

    no_key = _cli("--mlperf", str(bundle), "--out", str(tmp_path / "n"))
    assert no_key.returncode == BadInput.return_code and "--trust" in no_key.stderr
    wrong = _cli("--mlperf", str(bundle), "--out", str(tmp_path / "w"), "--trust", str(other.public_path))
    assert wrong.returncode == SignatureError.return_code, wrong.stderr
    unverified = _cli("--mlperf", str(bundle), "--out", str(tmp_path / "u"), "--no-verify")
    assert unverified.returncode == 0, unverified.stderr
    assert "NOT verified" in next((tmp_path / "u").glob("open/*/results/*/*/Offline/README.md")).read_text()
    assert not (tmp_path / "n").exists() and not (tmp_path / "w").exists()

    from packager.bundle.archive import pack, safe_unpack

    unpacked = safe_unpack(bundle, tmp_path / "unpacked")
    (unpacked / "metrics.json").write_text((unpacked / "metrics.json").read_text() + " ")
    tampered = pack(unpacked, tmp_path / "tampered.bundle.tar.gz")
    bad = _cli("--mlperf", str(tampered), "--out", str(tmp_path / "t"), "--trust", str(key.public_path))
    assert bad.returncode == 12, bad.stderr  # files vs subjects
    assert f"{tampered}: check 2" in bad.stderr and "metrics.json" in bad.stderr and not (tmp_path / "t").exists()
    assert _cli(str(bundle), "--out", str(tmp_path / "x"), "--no-verify").returncode == 2  # --mlperf is the format


def test_hostile_archive_is_refused_by_the_safe_unpacker(tmp_path):
    import io
    import tarfile

    evil = tmp_path / "evil.bundle.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(UnsafeArchive, match=r"'\.\.'"):
        export_mlperf([evil], tmp_path / "out", ExportOptions(verify=False))
    p = _cli("--mlperf", str(evil), "--out", str(tmp_path / "out2"), "--no-verify")
    assert p.returncode == UnsafeArchive.return_code, p.stderr
    assert not (tmp_path / "escape.txt").exists()


def test_same_name_other_hardware_is_a_system_of_its_own(runs, tmp_path):
    data, _, bi = runs
    other = tmp_path / "other-host"
    shutil.copytree(bi, other)
    s = json.loads((other / "system.json").read_text())
    s["memory_bytes"] = 4 * 2**30
    (other / "system.json").write_text(json.dumps(s))
    report = export_mlperf([bi, other], tmp_path / "out", ExportOptions(labels=data / "labels.tsv"))
    systems = sorted(p.stem for p in (tmp_path / "out" / "open" / "request-pack" / "systems").glob("*.json"))
    assert len(systems) == 2 and systems[1] == systems[0] + "_2"
    desc = json.loads((tmp_path / "out" / "open" / "request-pack" / "systems" / f"{systems[1]}.json").read_text())
    assert desc["system_name"] == systems[1] and desc["host_memory_capacity"] == "4.0 GiB"
    assert {e.system for e in report.entries} == set(systems)


def test_mllog_detail_records_by_key_and_a_broken_record_named(tmp_path):
    from packager.mllog import read_detail

    log = tmp_path / "mlperf_log_detail.txt"
    log.write_text('noise\n:::MLLOG {"key": "result_validity", "value": "INVALID"}\n'
                   ':::MLLOG {"key": "early_stopping_result", "value": 3}\n'
                   ':::MLLOG {"key": "result_validity", "value": "VALID"}\n')
    assert read_detail(log) == {"result_validity": "VALID", "early_stopping_result": 3}
    log.write_text(log.read_text() + ":::MLLOG {torn\n")
    with pytest.raises(ValueError, match=r"mlperf_log_detail.txt:5: .* not JSON"):
        read_detail(log)
    log.write_text(':::MLLOG ["no", "key"]\n')
    with pytest.raises(ValueError, match=":1: .* has no key"):
        read_detail(log)
