"""MultiStream: LoadGen's per-query records (queries.tsv, from its trace) and its statistics recomputed from them.

Real LoadGen 6.0.17 and real onnxruntime on the tiny fixed-seed net: the records must give back exactly what
LoadGen logged (count, mean, percentiles, early-stopping estimate), and a hostile queries.tsv is refused in one line.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("mlperf_loadgen")

from packager import querylog  # noqa: E402
from packager.errors import BadInput  # noqa: E402
from packager.harness.backends import BackendOptions, create  # noqa: E402
from packager.harness.scenarios import BuiltinDriver, ScenarioSettings, choose_driver  # noqa: E402
from packager.harness.tinynet import build  # noqa: E402
from packager.mllog import read_detail  # noqa: E402


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = create("onnxruntime")
    b.load(build(tmp_path_factory.mktemp("m") / "t.onnx", size=32), BackendOptions(threads=1))
    return b


@pytest.fixture(scope="module")
def tensors():
    return np.random.default_rng(0).standard_normal((24, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("batch", [8, 1])
def test_loadgen_multistream_records_give_loadgens_figures(backend, tensors, tmp_path, batch):
    """662 queries of 8 (mlperf.conf's minimum, enough for the early-stopping p99): queries.tsv stays, the trace is
    emptied, and every per-query figure of the detail log is recomputed exactly from the records."""
    d = choose_driver("auto", tmp_path / "loadgen")
    ms = d.multi_stream(backend, tensors, batch, ScenarioSettings(warmup=8))
    out = tmp_path / "loadgen" / "MultiStream"
    det = read_detail(out / "mlperf_log_detail.txt")
    assert det["effective_samples_per_query"] == 8 and det["effective_scenario"] == "MultiStream"
    assert ms.samples_per_query == 8 and ms.batch_size == batch and ms.count == det["result_query_count"] >= 662
    assert (out / "mlperf_log_trace.json").stat().st_size == 0
    assert ms.queries == "loadgen/MultiStream/queries.tsv" and ms.queries in d.log_files
    lat = querylog.read(out / querylog.QUERIES_NAME)
    assert len(lat) == ms.count
    got = querylog.stats(lat)
    assert got == {k: det[k] for k in got}
    assert det["early_stopping_met"] is True
    assert ms.early_stopping_p99_s == pytest.approx(det["early_stopping_latency_ms"] * 1e-9)
    assert ms.min_s <= ms.p50_s <= ms.p90_s <= ms.p99_s <= ms.max_s and ms.p99_s <= ms.early_stopping_p99_s


def test_too_few_queries_have_no_early_stopping_estimate(backend, tensors, tmp_path):
    d = choose_driver("auto", tmp_path / "loadgen")
    ms = d.multi_stream(backend, tensors, 8, ScenarioSettings(warmup=8, multistream_queries=100))
    det = read_detail(tmp_path / "loadgen" / "MultiStream" / "mlperf_log_detail.txt")
    assert ms.count == 100 and ms.early_stopping_p99_s is None and det["early_stopping_met"] is False
    assert querylog.stats(querylog.read(tmp_path / "loadgen" / "MultiStream" / "queries.tsv"))["early_stopping_met"] is False
    assert querylog.early_stopping_discard(661, 0.99) is None and querylog.early_stopping_discard(662, 0.99) == 1


def test_early_stopping_discards_as_loadgen_does():
    """Values LoadGen 6.0.17 printed for MultiStream runs here ("Would discard N highest latency queries")."""
    assert querylog.early_stopping_discard(5000, 0.99) - 1 == 32
    assert querylog.early_stopping_discard(20000, 0.99) - 1 == 166


def test_builtin_driver_refuses_multistream(backend, tensors):
    from packager.harness.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="MultiStream needs MLPerf LoadGen") as e:
        BuiltinDriver("test").multi_stream(backend, tensors, 8, ScenarioSettings())
    assert e.value.return_code == 3  # LoadGen is what is missing


def test_config_refuses_multistream_with_the_builtin_driver(tmp_path):
    from packager.harness.config import build_config

    base = {"preprocessing": {"resize": 36, "crop": 32, "mean": [0.5] * 3, "std": [0.25] * 3}, "run": {"scenarios": ["MultiStream"]}}
    paths = {k: tmp_path for k in ("model_path", "dataset_dir", "out_dir", "cache_dir")}
    assert build_config(base, **paths).scenarios == ("MultiStream",)
    with pytest.raises(BadInput, match="MultiStream needs MLPerf LoadGen") as e:
        build_config(base, driver="builtin", **paths)
    assert e.value.return_code == 2


@pytest.mark.parametrize("content, rule", [
    (b"", "no queries"),
    (b"0\t5\n2\t7\n", "in sequence"),
    (b"0\t-5\n", "in sequence"),
    (b"0\t5\tx\n", "in sequence"),
    (b"0\t" + b"9" * 80 + b"\n", "longer than"),
])
def test_a_hostile_queries_file_is_refused_in_one_line(tmp_path, content, rule):
    p = tmp_path / "queries.tsv"
    p.write_bytes(content)
    with pytest.raises(querylog.QueryLogError, match=rule) as e:
        querylog.read(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_queries_file_must_be_regular_and_bounded(tmp_path):
    real = tmp_path / "real.tsv"
    querylog.write(real, [3, 1, 2])
    assert querylog.read(real) == [3, 1, 2]
    link = tmp_path / "queries.tsv"
    os.symlink(real, link)
    with pytest.raises(querylog.QueryLogError, match="not a regular file"):
        querylog.read(link)
    big = tmp_path / "big.tsv"
    with big.open("wb") as f:
        f.truncate((querylog.MAX_QUERIES + 2) * querylog.MAX_LINE)  # sparse: nothing is read
    with pytest.raises(querylog.QueryLogError, match="over the cap"):
        querylog.read(big)
