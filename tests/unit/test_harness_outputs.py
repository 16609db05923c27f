"""predictions.jsonl (flush, resume, torn last line), validation by id, fingerprint, power probes, config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from packager.harness.config import build_config
from packager.harness.errors import ConfigError, DatasetError
from packager.harness.outputs import PredictionWriter, collect_system, predictions_for
from packager.harness.power import PowerMonitor, RaplReader, Unavailable
from packager.harness.validate import compare_outputs
from packager.results import PREDICTIONS_NAME, read_predictions


def _preds(ids, seed=0, classes=10):
    y = np.random.default_rng(seed).standard_normal((len(ids), classes)).astype(np.float32)
    return y, predictions_for(ids, y)


def test_predictions_hold_top5_probabilities_and_output_hash():
    y, preds = _preds(["a", "b"])
    import hashlib

    assert preds[0].top5[0] == int(np.argmax(y[0]))
    assert preds[0].output_sha256 == hashlib.sha256(y[0].tobytes()).hexdigest()
    assert preds[0].probs == sorted(preds[0].probs, reverse=True)
    off = predictions_for(["a"], y[:1], label_offset=1)
    assert off[0].top5[0] == preds[0].top5[0] - 1


def test_resume_drops_a_torn_last_line_and_keeps_finished_ids(tmp_path):
    _, preds = _preds(["a", "b", "c"])
    with PredictionWriter(tmp_path, resume=False) as w:
        w.write(preds[:2])
    path = tmp_path / PREDICTIONS_NAME
    with path.open("a") as f:
        f.write('{"id":"c","top5":[1,2')  # the process died mid-line
    w = PredictionWriter(tmp_path, resume=True)
    assert set(w.done) == {"a", "b"}
    w.write(preds[2:])
    w.close()
    assert [p.id for p in read_predictions(path)] == ["a", "b", "c"]
    # without --resume the file starts over
    PredictionWriter(tmp_path, resume=False).close()
    assert path.read_text() == ""


def test_resume_refuses_a_garbled_complete_line(tmp_path):
    (tmp_path / PREDICTIONS_NAME).write_text('{"id": "a"}\n')
    with pytest.raises(DatasetError, match="line 1"):
        PredictionWriter(tmp_path, resume=True)


def test_validation_names_mismatching_ids(tmp_path):
    y, _ = _preds(["a", "b", "c"], seed=5)
    np.savez(tmp_path / "ref.npz", ids=np.array(["a", "b", "c"]), outputs=y)
    mine = {"a": y[0].copy(), "b": y[1] + 0.01, "c": y[2].copy()}
    mine["c"][int(np.argmin(y[2]))] = 100.0  # changes top-1
    v = compare_outputs(mine, tmp_path / "ref.npz", atol=1e-3)
    assert not v.passed and v.compared == 3
    assert v.mismatched_ids == ["b", "c"] and v.top1_mismatched_ids == ["c"]
    assert v.max_abs_diff > 1
    ok = compare_outputs({"a": y[0] + 1e-5}, tmp_path / "ref.npz", atol=1e-3)
    assert ok.passed and ok.max_abs_diff == pytest.approx(1e-5, rel=0.1)
    missing = compare_outputs({"zz": y[0]}, tmp_path / "ref.npz", atol=1e-3)
    assert missing.missing_ids == ["zz"] and not missing.passed


def test_fingerprint_ignores_names_but_sees_weights_and_structure(tmp_path):
    onnx = pytest.importorskip("onnx")
    from packager.harness.fingerprint import fingerprint
    from packager.harness.tinynet import build

    a = fingerprint(build(tmp_path / "a.onnx", seed=0))
    b = fingerprint(build(tmp_path / "b.onnx", seed=1))
    assert a.structure_sha256 == b.structure_sha256 and a.weights_sha256 != b.weights_sha256
    assert a.ops["Conv"] == 7 and a.params == b.params > 30000
    # stem conv 16x112x112 outputs x 27 MACs each, at least; Gemm 1000x32
    assert a.macs_per_image >= 16 * 112 * 112 * 27 + 32000 and not a.notes
    m = onnx.load(str(tmp_path / "a.onnx"))
    for node in m.graph.node:
        node.name = "renamed_" + node.name
    m.graph.name = "other"
    onnx.save(m, str(tmp_path / "renamed.onnx"))
    r = fingerprint(tmp_path / "renamed.onnx")
    assert (r.structure_sha256, r.weights_sha256) == (a.structure_sha256, a.weights_sha256)
    c = fingerprint(build(tmp_path / "c.onnx", classes=10))
    assert c.structure_sha256 != a.structure_sha256


def test_power_none_and_absent_hardware_give_null_with_reason(tmp_path):
    with PowerMonitor("none") as m:
        pass
    r = m.reading()
    assert r.peak_w is None and r.mean_w is None and "no power probe" in r.reason
    with pytest.raises(Unavailable, match="does not exist"):
        RaplReader(tmp_path / "powercap")
    with PowerMonitor("command", command="/nonexistent/probe") as m:
        pass
    assert m.reading().peak_w is None and "not found" in m.reading().reason


def test_power_command_probe_samples_a_real_command(tmp_path):
    import time

    script = tmp_path / "watts.sh"
    script.write_text('n=$(cat "$0.n" 2>/dev/null || echo 0); echo $((n + 1)) > "$0.n"; echo "$((2 + n % 3)).5"\n')
    with PowerMonitor("command", command=f"sh {script}", interval_s=0.02) as m:
        deadline = time.monotonic() + 20  # a loaded machine forks slowly
        while m.reading().samples < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    r = m.reading()
    assert r.samples >= 3 and r.peak_w == 4.5 and 2.5 <= r.mean_w <= 4.5


def test_rapl_reader_reads_energy_counters_with_wrap(tmp_path):
    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "name").write_text("package-0\n")  # as the kernel names a package zone; only those are summed
    (d / "energy_uj").write_text("999000000\n")
    (d / "max_energy_range_uj").write_text("1000000000\n")
    r = RaplReader(tmp_path)
    (d / "energy_uj").write_text("1000000\n")  # wrapped: 2 J since the last read
    w = r.read()
    assert w is not None and w > 0


def test_config_from_manifest_sections(tmp_path):
    data = {
        "name": "x",
        "preprocessing": {"resize": 256, "crop": 224, "mean": [0.5] * 3, "std": [0.5] * 3},
        "run": {"batch_sizes": [1, 32], "stages": {"functional": {"samples": 20, "min_top1": 0.5}}},
        "framework": {"name": "reference", "version": "1", "options": {"threads": 2}},
        "model": {"input": {"name": "input", "shape": ["batch", 3, 224, 224]}, "label_offset": 0},
        "authors": [{"name": "ignored: the harness reads only its sections"}],
    }
    base = dict(model_path=tmp_path / "m.onnx", dataset_dir=tmp_path, out_dir=tmp_path / "o", cache_dir=tmp_path / "c")
    cfg = build_config(data, **base)
    assert cfg.backend == "reference" and cfg.batch_sizes == (1, 32) and cfg.samples == 20 and cfg.min_top1 == 0.5
    assert build_config(data, **base, backend="onnxruntime", samples=5).samples == 5
    with pytest.raises(ConfigError, match="batch_size"):
        build_config({**data, "run": {"batch_size": [1]}}, **base)
    with pytest.raises(ConfigError, match="preprocessing"):
        build_config({"name": "x"}, **base)


def test_system_json_describes_this_machine():
    s = collect_system(image_digest="sha256:" + "0" * 64, frameworks={"numpy": np.__version__})
    assert s.cores >= 1 and s.kernel and s.machine and s.memory_bytes > 0
    json.dumps(s.model_dump(mode="json"))
