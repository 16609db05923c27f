"""verify recomputes a signed MultiStream claim from the bundle's per-query records and LoadGen's detail log.

The records come from a real LoadGen 6.0.17 MultiStream run (tiny fixed-seed net, real onnxruntime) put into the
tamper suite's result directory; each lie is signed by a trusted key (a dishonest or broken pipeline), so only
the recomputation can catch it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("mlperf_loadgen")

from _bundle_fixture import make_result_dir  # noqa: E402

from packager.bundle.keys import TrustStore, generate_keypair  # noqa: E402
from packager.bundle.sign import sign_result_dir  # noqa: E402
from packager.bundle.verify import verify_bundle  # noqa: E402
from packager.errors import MetricsMismatch  # noqa: E402
from packager.harness.backends import BackendOptions, create  # noqa: E402
from packager.harness.scenarios import ScenarioSettings, choose_driver  # noqa: E402
from packager.harness.tinynet import build  # noqa: E402
from packager.results import Metrics  # noqa: E402


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory) -> Path:
    root = make_result_dir(tmp_path_factory.mktemp("ms") / "result", stage="functional")
    b = create("onnxruntime")
    b.load(build(tmp_path_factory.mktemp("m") / "t.onnx", size=32), BackendOptions(threads=1))
    tensors = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    ms = choose_driver("auto", root / "loadgen").multi_stream(b, tensors, 8, ScenarioSettings(warmup=8))
    m = Metrics.model_validate_json((root / "metrics.json").read_text())
    _write(root, m.model_copy(update={"multistream": ms}))
    return root


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    k = generate_keypair(d / "k")
    return k.private_path, TrustStore.load([k.public_path])


def _write(root: Path, m: Metrics) -> None:
    (root / "metrics.json").write_text(m.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _signed(unsigned: Path, tmp_path: Path, keys, change=None) -> Path:
    root = Path(shutil.copytree(unsigned, tmp_path / "bundle"))
    if change:
        change(root)
    sign_result_dir(root, keys[0])
    return root


def _metrics(root: Path) -> Metrics:
    return Metrics.model_validate_json((root / "metrics.json").read_text())


def test_a_true_multistream_claim_verifies(unsigned, tmp_path, keys):
    report = verify_bundle(_signed(unsigned, tmp_path, keys), keys[1])
    check4 = next(c for c in report.checks if c.number == 4)
    assert check4.status == "pass" and "MultiStream p99" in check4.detail and "recomputed from 662 queries" in check4.detail


@pytest.mark.parametrize("field, factor", [("p99_s", 0.5), ("early_stopping_p99_s", 0.9), ("mean_s", 1.01), ("count", None)])
def test_a_signed_but_altered_figure_is_refused(unsigned, tmp_path, keys, field, factor):
    def lie(root: Path) -> None:
        m = _metrics(root)
        ms = m.multistream
        value = ms.count - 1 if factor is None else getattr(ms, field) * factor
        _write(root, m.model_copy(update={"multistream": ms.model_copy(update={field: value})}))

    with pytest.raises(MetricsMismatch, match=rf"check 4 .*multistream\.{field} claimed") as e:
        verify_bundle(_signed(unsigned, tmp_path, keys, lie), keys[1])
    assert e.value.return_code == MetricsMismatch.return_code and "\n" not in str(e.value)


def test_altered_records_disagree_with_loadgens_log(unsigned, tmp_path, keys):
    """Records edited to fit a better p99 (every slow query made fast) no longer give LoadGen's logged figures."""
    def faster(root: Path) -> None:
        p = root / "loadgen" / "MultiStream" / "queries.tsv"
        head, *rows = p.read_text().splitlines()
        lat = [int(r.split("\t")[1]) for r in rows]
        cut = sorted(lat)[len(lat) // 2]
        p.write_text("\n".join([head] + [f"{q}\t{min(v, cut)}" for q, v in enumerate(lat)]) + "\n")

    with pytest.raises(MetricsMismatch, match=r"queries\.tsv gives result_99\.00_percentile_per_query_latency_ns \d+, "
                                              r"loadgen/MultiStream/mlperf_log_detail\.txt logged \d+"):
        verify_bundle(_signed(unsigned, tmp_path, keys, faster), keys[1])


@pytest.mark.parametrize("where", ["../../etc/passwd", "loadgen/MultiStream/nothing.tsv"])
def test_records_outside_the_bundle_or_missing_are_refused(unsigned, tmp_path, keys, where):
    def point(root: Path) -> None:
        m = _metrics(root)
        _write(root, m.model_copy(update={"multistream": m.multistream.model_copy(update={"queries": where})}))

    with pytest.raises(MetricsMismatch, match="not a file of the bundle"):
        verify_bundle(_signed(unsigned, tmp_path, keys, point), keys[1])


def test_the_claim_is_in_the_signed_metrics(unsigned):
    m = json.loads((unsigned / "metrics.json").read_text())["multistream"]
    assert m["scenario"] == "MultiStream" and m["samples_per_query"] == 8 and m["queries"] == "loadgen/MultiStream/queries.tsv"


def test_published_multistream_is_its_own_column_and_page_line(unsigned, tmp_path, keys):
    """verify-then-publish on a real SQLite board: the row carries the p99 per query, the latency column stays
    SingleStream's, and the result page says a query is 8 images."""
    from fastapi.testclient import TestClient

    from packager.scoreboard.publish import publish
    from packager.scoreboard.store import Board
    from packager.scoreboard.web import create_app

    bundle = _signed(unsigned, tmp_path, keys)
    ms = _metrics(bundle).multistream
    url = f"sqlite:///{tmp_path / 'board.db'}"
    with Board(url) as board:
        publish(bundle, board, keys[1])
        (row,) = board.rows()
    assert row.multistream_p99_s == ms.p99_s and row.latency_p90_s == _metrics(bundle).latency.p90_s
    with TestClient(create_app(url)) as c:
        page = c.get(f"/results/{row.bundle_digest}").text
    assert f"per query of {ms.samples_per_query} images" in page and "not comparable with the SingleStream latency" in page


def test_the_statement_names_the_scenarios_that_ran(unsigned, tmp_path, keys):
    from packager.bundle.sign import build_statement

    bundle = _signed(unsigned, tmp_path, keys)
    assert build_statement(bundle).predicate.run.scenarios == ["SingleStream", "MultiStream", "Offline"]
