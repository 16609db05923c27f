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


def test_staging_serves_batches_in_load_order_as_views():
    full = np.arange(5)[:, None].astype(np.float32)
    st = _Staging(full, 3)
    assert st.view([0, 1, 2]) is None  # nothing loaded yet
    st.load([3, 0, 4, 1, 2])
    for idx in ([3, 0, 4], [1, 2, 3], [2, 3, 0], [4, 1]):  # load order, wrapping around
        v = st.view(idx)
        assert v is not None and v[:, 0].tolist() == idx and v.base is not None and v.flags.c_contiguous
    assert st.view([0, 3, 4]) is None and st.view([3, 4, 0]) is None  # another order: the caller gathers


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
