"""``python -m packager.harness`` end to end: real images, real onnxruntime, real LoadGen, exit codes.

The tiny fixed-seed net keeps these fast; the real EfficientNet-Lite0 runs in
``test_harness_efficientnet.py`` (slow).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from packager.harness.tinynet import build
from packager.results import (
    METRICS_NAME,
    PREDICTIONS_NAME,
    SYSTEM_NAME,
    Metrics,
    System,
    read_predictions,
)

CONFIG = {
    "name": "tiny",
    "preprocessing": {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "run": {"batch_sizes": [1, 8], "warmup": 2, "scenarios": ["SingleStream", "Offline"]},
    "framework": {"name": "onnxruntime", "version": "1.32.0", "options": {"threads": 2}},
    "dataset": {"layout": "labels-tsv"},
    "model": {"input": {"name": "input", "shape": ["batch", 3, 224, 224], "layout": "NCHW"}, "num_classes": 1000},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("model") / "tiny.onnx")


def harness(tmp_path: Path, *args: str, config: dict | None = None) -> subprocess.CompletedProcess:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config or CONFIG))
    argv = [sys.executable, "-m", "packager.harness", "--config", str(cfg), "--cache", str(tmp_path / "cache"),
            "--queries", "40", "--offline-samples", "48", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_full_run_writes_valid_outputs_with_loadgen(tmp_path, tiny, shared_sample):
    out = tmp_path / "out"
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(shared_sample), "--out", str(out), "--samples", "24",
                "--image-digest", "sha256:" + "ab" * 32, "--save-outputs")
    assert p.returncode == 0, p.stderr
    preds = read_predictions(out / PREDICTIONS_NAME)
    assert len(preds) == 24 and len({x.id for x in preds}) == 24
    assert sum(x.input_sha256 is not None for x in preds) == 24  # the first 32 inputs are hashed
    m = Metrics.model_validate_json((out / METRICS_NAME).read_text())
    assert m.accuracy.samples == 24 and m.driver.startswith("mlperf-loadgen")
    assert m.latency is not None and m.latency.count >= 40 and 0 < m.latency.p50_s <= m.latency.p99_s
    assert [t.batch_size for t in m.throughput] == [1, 8] and all(t.images_per_s > 0 for t in m.throughput)
    assert m.power.peak_w is None and m.power.reason
    assert m.footprint.model_bytes == tiny.stat().st_size and m.footprint.peak_rss_bytes > 0
    assert m.fingerprint is not None and m.fingerprint.ops["Conv"] == 7
    assert any(f.endswith("SingleStream/mlperf_log_summary.txt") for f in m.loadgen_logs)
    for f in m.loadgen_logs:
        assert (out / f).is_file()
    acc_log = json.loads((out / "loadgen" / "Accuracy" / "mlperf_log_accuracy.json").read_text())
    qsl_ids = dict(line.split("\t") for line in (out / "loadgen" / "Accuracy" / "qsl_ids.tsv").read_text().splitlines())
    top1 = {x.id: x.top5[0] for x in preds}
    assert len(acc_log) == 24
    for rec in acc_log:  # LoadGen's accuracy log holds each sample's top-1 as little-endian int64
        assert int.from_bytes(bytes.fromhex(rec["data"]), "little") == top1[qsl_ids[str(rec["qsl_idx"])]]
    s = System.model_validate_json((out / SYSTEM_NAME).read_text())
    assert s.image_digest == "sha256:" + "ab" * 32 and s.frameworks["onnxruntime"] == "1.32.0"
    z = np.load(out / "outputs.npz")
    assert z["outputs"].shape == (24, 1000)


def test_reference_backend_validates_against_onnxruntime_outputs(tmp_path, tiny, shared_sample):
    ort_out, ref_out = tmp_path / "ort", tmp_path / "ref"
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(shared_sample), "--out", str(ort_out), "--samples", "8",
                "--scenarios", "Offline", "--batch-sizes", "4", "--save-outputs")
    assert p.returncode == 0, p.stderr
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(shared_sample), "--out", str(ref_out), "--samples", "8",
                "--backend", "reference", "--scenarios", "SingleStream", "--batch-sizes", "1", "--driver", "builtin",
                "--reference-outputs", str(ort_out / "outputs.npz"), "--atol", "1e-4")
    assert p.returncode == 0, p.stderr
    m = Metrics.model_validate_json((ref_out / METRICS_NAME).read_text())
    assert m.validation.passed and m.validation.compared == 8 and m.validation.max_abs_diff < 1e-4
    assert m.driver.startswith("builtin (requested")
    assert m.framework.startswith("reference")
    a = {x.id: x.top5[0] for x in read_predictions(ort_out / PREDICTIONS_NAME)}
    b = {x.id: x.top5[0] for x in read_predictions(ref_out / PREDICTIONS_NAME)}
    assert a == b and len(a) == 8


def test_outputs_of_another_model_fail_validation_by_id(tmp_path, tiny, shared_sample):
    other = build(tmp_path / "other.onnx", seed=7)
    p = harness(tmp_path, "--model", str(other), "--dataset", str(shared_sample), "--out", str(tmp_path / "a"), "--samples", "4",
                "--scenarios", "Offline", "--batch-sizes", "4", "--save-outputs")
    assert p.returncode == 0, p.stderr
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(shared_sample), "--out", str(tmp_path / "b"), "--samples", "4",
                "--scenarios", "Offline", "--batch-sizes", "4", "--reference-outputs", str(tmp_path / "a" / "outputs.npz"))
    assert p.returncode == 1, p.stderr
    assert "n01440764_tench.JPEG" in p.stderr and "beyond atol" in p.stderr
    m = Metrics.model_validate_json((tmp_path / "b" / METRICS_NAME).read_text())  # the evidence is written anyway
    assert not m.validation.passed and "n01440764_tench.JPEG" in m.validation.mismatched_ids


def test_resume_completes_an_interrupted_run(tmp_path, tiny, shared_sample):
    out = tmp_path / "out"
    args = ["--model", str(tiny), "--dataset", str(shared_sample), "--out", str(out), "--scenarios", "Offline", "--batch-sizes", "4"]
    assert harness(tmp_path, *args, "--samples", "12").returncode == 0
    full = (out / PREDICTIONS_NAME).read_text().splitlines(keepends=True)
    (out / PREDICTIONS_NAME).write_text("".join(full[:5]) + full[5][:30])  # killed while writing line 6
    p = harness(tmp_path, *args, "--samples", "12", "--resume")
    assert p.returncode == 0, p.stderr
    assert "skipping 5 sample(s)" in p.stderr and "truncated last line" in p.stderr
    assert sorted((out / PREDICTIONS_NAME).read_text().splitlines(keepends=True)) == sorted(full)


def test_corrupt_image_exits_2_naming_the_file(tmp_path, tiny, shared_sample):
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    lines = (shared_sample / "labels.tsv").read_text().splitlines()[:4]
    for line in lines[1:]:
        shutil.copy(shared_sample / "images" / line.split("\t")[0], ds / "images")
    victim = ds / "images" / lines[2].split("\t")[0]
    victim.write_bytes(victim.read_bytes()[:300])
    (ds / "labels.tsv").write_text("\n".join(lines) + "\n")
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(ds), "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert str(victim) in p.stderr and "cannot decode image" in p.stderr


def test_model_input_shape_not_matching_the_preprocessing_exits_2(tmp_path, tiny, shared_sample):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["preprocessing"]["crop"] = 192
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(shared_sample), "--out", str(tmp_path / "o"), config=cfg)
    assert p.returncode == 2
    assert str(tiny) in p.stderr and "224" in p.stderr and "192" in p.stderr


def test_missing_label_exits_2_naming_the_labels_file(tmp_path, tiny, shared_sample):
    ds = tmp_path / "ds"
    shutil.copytree(shared_sample, ds)
    labels = (ds / "labels.tsv").read_text().splitlines()
    (ds / "labels.tsv").write_text("\n".join(labels[:-1]) + "\n")
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(ds), "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert str(ds / "labels.tsv") in p.stderr and labels[-1].split("\t")[0] in p.stderr


def test_tvm_backend_compiles_caches_and_matches_onnxruntime(tmp_path, tiny, shared_sample):
    pytest.importorskip("tvm")
    ort_out = tmp_path / "ort"
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(shared_sample), "--out", str(ort_out), "--samples", "6",
                "--scenarios", "Offline", "--batch-sizes", "3", "--save-outputs")
    assert p.returncode == 0, p.stderr
    args = ["--model", str(tiny), "--dataset", str(shared_sample), "--samples", "6", "--backend", "tvm", "--scenarios", "Offline",
            "--batch-sizes", "3", "--offline-samples", "6", "--reference-outputs", str(ort_out / "outputs.npz"), "--atol", "1e-3"]
    p = harness(tmp_path, *args, "--out", str(tmp_path / "tvm1"))
    assert p.returncode == 0, p.stderr
    assert "compiling" in p.stderr
    m = Metrics.model_validate_json((tmp_path / "tvm1" / METRICS_NAME).read_text())
    assert m.framework.startswith("tvm ") and m.validation.passed and m.validation.compared == 6
    assert len(list((tmp_path / "cache" / "tvm").glob("*.so"))) == 1
    p = harness(tmp_path, *args, "--out", str(tmp_path / "tvm2"))
    assert p.returncode == 0 and "compiling" not in p.stderr and "from " in p.stderr  # served from the cache


def test_unknown_backend_is_a_usage_error(tmp_path, tiny, shared_sample):
    p = harness(tmp_path, "--model", str(tiny), "--dataset", str(shared_sample), "--out", str(tmp_path / "o"), "--backend", "mxnet")
    assert p.returncode == 2 and "mxnet" in p.stderr
