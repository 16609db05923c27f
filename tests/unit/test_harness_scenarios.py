"""SingleStream and Offline drivers on the real onnxruntime backend: LoadGen and the built-in loop agree in form."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from packager.harness.backends import BackendOptions, create
from packager.harness.scenarios import (
    BuiltinDriver,
    ScenarioSettings,
    _batches,
    _Staging,
    choose_driver,
    latency_stats,
)
from packager.harness.tinynet import build


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = create("onnxruntime")
    b.load(build(tmp_path_factory.mktemp("m") / "t.onnx", size=64), BackendOptions(threads=1))
    return b


@pytest.fixture(scope="module")
def tensors():
    return np.random.default_rng(0).standard_normal((10, 3, 64, 64)).astype(np.float32)


def test_latency_stats_percentiles():
    s = latency_stats(np.arange(1, 101) * 1e-3)
    assert s.count == 100 and s.min_s == pytest.approx(1e-3) and s.max_s == pytest.approx(0.1)
    assert s.p50_s == pytest.approx(0.0505) and s.p90_s == pytest.approx(0.0901) and s.mean_s == pytest.approx(0.0505)


def test_batches_cycle_the_sample_set():
    t = np.arange(5)[:, None].astype(np.float32)
    b = _batches(t, 2)
    assert [x[:, 0].tolist() for x in b] == [[0, 1], [2, 3], [4, 0]]


def test_batches_are_views_but_the_wrapping_one():
    t = np.arange(5)[:, None].astype(np.float32)
    b = _batches(t, 2)
    assert b[0].base is t and b[1].base is t and b[2].base is not t


def test_staging_serves_batches_in_load_order_as_views_rearranged_in_place():
    full = np.arange(5)[:, None].astype(np.float32)
    st = _Staging(full, 3)
    buf = np.empty((3, 1), np.float32)
    assert st.view([0, 1, 2]).base is full  # sample order before any load
    st.load([3, 0, 4, 1, 2])
    assert full[:, 0].tolist() == [3, 0, 4, 1, 2]  # in place: no second copy of the set
    for idx in ([3, 0, 4], [1, 2], [0, 4, 1]):  # slices of the load order
        v = st.view(idx)
        assert v is not None and v[:, 0].tolist() == idx and v.base is full and v.flags.c_contiguous
        assert st.batch(idx, buf)[: len(idx), 0].tolist() == idx
    for idx in ([2, 3, 0], [0, 3, 4]):  # wrapping, or another order: gathered into the buffer
        assert st.view(idx) is None
        x = st.batch(idx, buf)
        assert x is buf and x[:, 0].tolist() == idx
    assert st.batch([4, 1], buf)[:, 0].tolist() == [4, 1, 4]  # a short last batch, padded with its first sample
    st.load([1, 2, 0])  # not the whole set: left as it is, gathered
    assert st.batch([1, 2, 0], buf)[:, 0].tolist() == [1, 2, 0]
    st.restore()
    assert full[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_staging_follows_every_cycle_of_a_large_permutation():
    rng = np.random.default_rng(1)
    full = np.repeat(np.arange(257, dtype=np.float32)[:, None], 4, axis=1)
    st = _Staging(full, 32)
    for _ in range(3):
        order = rng.permutation(257)
        st.load(order)
        assert full[:, 0].tolist() == order.tolist() and (full == full[:, :1]).all()
    st.restore()
    assert full[:, 0].tolist() == list(range(257))


def test_loadgen_offline_holds_one_performance_set(backend, tmp_path):
    """Measured with tracemalloc (numpy reports its buffers to it): the set, not two or three of it."""
    pytest.importorskip("mlperf_loadgen")
    import tracemalloc

    t = np.random.default_rng(2).standard_normal((64, 3, 64, 64)).astype(np.float32)  # 3 MiB
    before = t.copy()
    d = choose_driver("auto", tmp_path / "loadgen")
    s = ScenarioSettings(warmup=2, offline_min_samples=128)
    tracemalloc.start()
    try:
        th = d.offline(backend, t, 8, s)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert th.samples >= 128
    assert peak < 0.5 * t.nbytes, f"offline allocated {peak / t.nbytes:.2f} performance sets"
    assert np.array_equal(t, before)  # put back in sample order


def test_builtin_driver(backend, tensors):
    d = BuiltinDriver("test")
    s = ScenarioSettings(warmup=2, single_stream_queries=30, offline_min_samples=40)
    lat = d.single_stream(backend, tensors, s)
    assert lat.count == 30 and 0 < lat.min_s <= lat.p50_s <= lat.p90_s <= lat.p99_s <= lat.max_s
    th = d.offline(backend, tensors, 4, s)
    assert th.batch_size == 4 and th.samples == 40 and th.images_per_s == pytest.approx(40 / th.duration_s)


def test_loadgen_driver_keeps_logs_and_early_stopping(backend, tensors, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    d = choose_driver("auto", tmp_path / "loadgen")
    assert d.name.startswith("mlperf-loadgen ")
    s = ScenarioSettings(warmup=2, single_stream_queries=80, offline_min_samples=37)
    lat = d.single_stream(backend, tensors, s)
    assert lat.count == 80 and lat.p50_s <= lat.p90_s <= lat.max_s
    assert lat.early_stopping_p90_s is not None and lat.early_stopping_p90_s >= lat.p90_s * 0.999
    assert lat.early_stopping_p99_s is None  # LoadGen needs 662 queries for a p99 estimate
    th = d.offline(backend, tensors, 4, s)
    assert th.samples == 37 and th.images_per_s > 0  # a short last batch is padded, not dropped
    summary = (tmp_path / "loadgen" / "SingleStream" / "mlperf_log_summary.txt").read_text()
    assert "SingleStream" in summary and "Result is" in summary
    assert (tmp_path / "loadgen" / "Offline-b4" / "mlperf_log_detail.txt").is_file()
    assert choose_driver("builtin", tmp_path).name == "builtin (requested with --driver builtin)"


# --- submission mode -----------------------------------------------------------------------

# Test-only user.conf lines: MLPerf's 600 s per scenario would not fit a unit test. The run is then
# not conformant, and its detail logs say so (effective_min_duration_ms), which the export flags.
SHORT = ("*.SingleStream.min_duration = 300", "*.Offline.min_duration = 300")


def test_submission_mode_takes_mlperf_conf_seeds_and_a_user_conf(tmp_path):
    """LoadGen's built-in mlperf.conf (v6.1) gives the official seeds and 1024 performance samples; the user.conf
    the run wrote stays beside the logs, with the test-only lines marked; LoadGen logs no error."""
    pytest.importorskip("mlperf_loadgen")
    from packager.harness.config import SUBMISSION_PERFORMANCE_SAMPLES
    from packager.harness.scenarios import OFFICIAL_SEEDS
    from packager.mllog import read_detail

    b = create("onnxruntime")
    b.load(build(tmp_path / "t.onnx", size=32), BackendOptions(threads=1))
    t = np.random.default_rng(1).standard_normal((SUBMISSION_PERFORMANCE_SAMPLES, 3, 32, 32)).astype(np.float32)
    s = ScenarioSettings(warmup=2, mode="submission", user_conf_overrides=SHORT)
    d = choose_driver("auto", tmp_path / "loadgen", s)
    d.single_stream(b, t, s)
    d.offline(b, t, 8, s)
    d.accuracy(1030, lambda i: t[i % len(t)], lambda idx, x: np.asarray(b.run(x)).argmax(1), 8)
    for sub, scenario in (("SingleStream", "SingleStream"), ("Offline-b8", "Offline"), ("Accuracy", "Offline")):
        det = read_detail(tmp_path / "loadgen" / sub / "mlperf_log_detail.txt")
        assert {k: det[f"effective_{k}"] for k in OFFICIAL_SEEDS} == OFFICIAL_SEEDS, sub
        assert det["effective_performance_sample_count"] == SUBMISSION_PERFORMANCE_SAMPLES
        assert det["effective_scenario"] == scenario and det.get("num_errors", 0) == 0, sub
        conf = (tmp_path / "loadgen" / sub / "user.conf").read_text()
        assert "TEST-ONLY" in conf and SHORT[0] in conf
        assert f"loadgen/{sub}/user.conf" in d.log_files
    assert "resnet50.SingleStream.target_latency = " in (tmp_path / "loadgen" / "SingleStream" / "user.conf").read_text()
    assert read_detail(tmp_path / "loadgen" / "SingleStream" / "mlperf_log_detail.txt")["effective_min_duration_ms"] == 300
    assert read_detail(tmp_path / "loadgen" / "Accuracy" / "mlperf_log_detail.txt")["qsl_reported_total_count"] == 1030


def test_quick_mode_keeps_todays_settings(backend, tensors, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    from packager.mllog import read_detail

    d = choose_driver("auto", tmp_path / "loadgen")
    d.single_stream(backend, tensors, ScenarioSettings(warmup=1, single_stream_queries=20))
    det = read_detail(tmp_path / "loadgen" / "SingleStream" / "mlperf_log_detail.txt")
    assert det["effective_qsl_rng_seed"] == 0 and det["effective_performance_sample_count"] == len(tensors)
    assert not (tmp_path / "loadgen" / "SingleStream" / "user.conf").exists()


def test_submission_mode_refuses_a_small_data_set_and_the_builtin_driver(tmp_path):
    from packager.errors import BadInput
    from packager.harness.scenarios import check_data_set

    with pytest.raises(BadInput, match=r"submission mode needs at least 1024 images .* has 200") as e:
        check_data_set("submission", 200, "/data")
    assert e.value.return_code == 2 and "\n" not in str(e.value)
    check_data_set("quick", 200, "/data")  # quick mode runs on anything
    check_data_set("submission", 1024, "/data")
    with pytest.raises(BadInput, match="LoadGen"):
        choose_driver("builtin", tmp_path, ScenarioSettings(mode="submission"))


def test_measurement_class_names_mode_execution_and_driver(tmp_path):
    from packager.harness.scenarios import measurement_for

    m = measurement_for(ScenarioSettings(), BuiltinDriver("test"), "emulated")
    assert (m.mode, m.execution, m.driver) == ("quick", "emulated", "builtin") and m.key == "quick/emulated/builtin"


def test_submission_config_takes_the_whole_data_set(tmp_path):
    from packager.errors import BadInput
    from packager.harness.config import build_config

    base = {"preprocessing": {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    paths = dict(model_path=tmp_path / "m.onnx", dataset_dir=tmp_path, out_dir=tmp_path, cache_dir=tmp_path)
    cfg = build_config(base, **paths, stage="full", mode="submission")
    assert cfg.mode == "submission" and cfg.performance_samples == 1024
    with pytest.raises(BadInput, match="whole data set"):
        build_config(base, **paths, stage="full", mode="submission", samples=10)
    with pytest.raises(BadInput, match="--user-conf-override only"):
        build_config(base, **paths, user_conf_overrides=["*.Offline.min_duration = 1"])
    with pytest.raises(BadInput, match="mode 'fast'"):
        build_config(base, **paths, mode="fast")


def test_the_installed_loadgen_embeds_the_v61_mlperf_conf():
    """The wheel ships no mlperf.conf file: LoadGen compiles it in and records its git blob id; it is the pinned one."""
    lg = pytest.importorskip("mlperf_loadgen")
    from pathlib import Path

    from packager.harness.scenarios import MLPERF_CONF_GIT_BLOB

    assert f"{MLPERF_CONF_GIT_BLOB} /mlperf.conf".encode() in Path(lg.__file__).read_bytes()
