"""Measurement classes on the board: part of the signed result, a column and a filter, a frontier per class, units.

Rows are inserted with ``Board.insert`` and a predicate-shaped detail (what ``publish`` stores after verifying),
so the class comes from the same place as on a real board: the signed predicate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa

from packager.scoreboard.pareto import Direction, Objective
from packager.scoreboard.store import (
    MIGRATIONS,
    OBJECTIVE_UNITS,
    Board,
    Filters,
    ResultRow,
    board_schema,
    frontiers_by_class,
    measurement_key,
    now_iso,
)

OBJS = (Objective("accuracy", Direction.MAX), Objective("latency", Direction.MIN))


def _row(n: int, platform: str = "linux/amd64", top1: float = 0.5, latency: float | None = 0.01) -> ResultRow:
    return ResultRow(
        f"sha256:{n:064x}", f"art{n}", "1", None, "m", "onnxruntime", "1", platform, "fp32", "cpu", "full", 200, top1,
        top1, latency, latency, 100.0, None, None, None, "sha256:" + "2" * 64, "k", "author", "x", now_iso(),
    )


def _detail(platform: str, driver: str = "mlperf-loadgen 6.0.17", measurement: dict | None = None,
            arch: str | None = None) -> dict:
    metrics = {"platform": platform, "driver": driver}
    if measurement:
        metrics["measurement"] = measurement
    env = {"sandbox": {"engine": {"engine": "docker", "arch": arch}}} if arch else {"sandbox": {}}
    return {"predicate": {"metrics": metrics, "environment": env}}


def test_the_signed_class_is_taken_as_signed():
    m = {"mode": "submission", "execution": "native", "driver": "loadgen"}
    assert measurement_key(_detail("linux/arm64", measurement=m)) == "submission/native/loadgen"


def test_results_signed_before_classes_get_a_derived_class():
    # quick (no submission mode existed); driver from metrics.driver; execution from the engine's arch, else the platform
    assert measurement_key(_detail("linux/arm64", arch="amd64")) == "quick/emulated/loadgen"
    assert measurement_key(_detail("linux/arm64", arch="arm64")) == "quick/native/loadgen"
    assert measurement_key(_detail("linux/amd64", driver="builtin (x)")) == "quick/native/builtin"
    assert measurement_key(_detail("linux/arm/v7")) == "quick/emulated/loadgen"
    assert measurement_key({"note": "hand-inserted"}) == "unknown"


def test_insert_stores_the_class_and_the_filter_selects_it(tmp_path: Path):
    with Board(f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.insert(_row(1), _detail("linux/amd64"))
        b.insert(_row(2, "linux/arm64"), _detail("linux/arm64", arch="amd64"))
        assert {r.measurement for r in b.rows()} == {"quick/native/loadgen", "quick/emulated/loadgen"}
        assert [r.artifact for r in b.rows(Filters(measurement="quick/emulated/loadgen"))] == ["art2"]
        assert b.facets()["measurement"] == ["quick/emulated/loadgen", "quick/native/loadgen"]
        assert b.get(_row(1).bundle_digest)[0].measurement == "quick/native/loadgen"


def test_migration_3_backfills_rows_published_before_it(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Board(url, migrate=False)
    with old.engine.begin() as conn:
        board_schema.create(conn)
        for v, m in enumerate(MIGRATIONS[:2], start=1):
            m(conn)
            conn.execute(board_schema.insert().values(version=v, applied_at="then"))
        # the columns of migrations 1-2: later ones (measurement, multistream_p99_s) do not exist yet
        values = {k: v for k, v in _row(7, "linux/arm64").to_json().items() if k not in ("measurement", "multistream_p99_s")}
        conn.execute(sa.table("results", *(sa.column(k) for k in [*values, "detail"])).insert().values(
            **values, detail=json.dumps(_detail("linux/arm64", arch="amd64"))))
    old.close()
    with Board(url) as b:
        assert b.schema_version() == len(MIGRATIONS)
        (r,) = b.rows()
        assert r.measurement == "quick/emulated/loadgen"


def test_a_frontier_never_spans_two_classes():
    """An emulated result better on every objective does not push the native one off its frontier."""
    native = replace(_row(1, top1=0.6, latency=0.02), measurement="quick/native/loadgen")
    emulated = replace(_row(2, "linux/arm64", top1=0.9, latency=0.01), measurement="quick/emulated/loadgen")
    worse = replace(_row(3, top1=0.5, latency=0.03), measurement="quick/native/loadgen")
    fronts = frontiers_by_class([native, emulated, worse], OBJS)
    assert fronts["quick/native/loadgen"].front == (native.bundle_digest,)
    assert fronts["quick/emulated/loadgen"].front == (emulated.bundle_digest,)


def test_units_on_every_objective():
    assert OBJECTIVE_UNITS["latency"].show(0.02422) == "24.22 ms"
    assert OBJECTIVE_UNITS["accuracy"].show(0.89) == "89 %"
    assert OBJECTIVE_UNITS["throughput"].label == "images/s" and OBJECTIVE_UNITS["power"].label == "W"
    assert OBJECTIVE_UNITS["price"].show(None) == "—"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", "board", "pareto", *args], capture_output=True, text=True, timeout=120)


def test_cli_prints_one_frontier_per_class_with_units(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with Board(url) as b:
        b.insert(_row(1, top1=0.6, latency=0.02422), _detail("linux/amd64"))
        b.insert(_row(2, "linux/arm64", top1=0.9, latency=0.01), _detail("linux/arm64", arch="amd64"))
    r = _cli("--board", url, "--objectives", "accuracy:max,latency:min")
    assert r.returncode == 0, r.stderr
    assert "class quick/native/loadgen" in r.stdout and "class quick/emulated/loadgen" in r.stdout
    assert "latency (ms)" in r.stdout and "24.22 ms" in r.stdout and "accuracy (%)" in r.stdout and "60 %" in r.stdout
    assert "not the ILSVRC2012 validation set" in r.stdout.replace("\n", " ")
    j = json.loads(_cli("--board", url, "--objectives", "accuracy:max,latency:min", "--json").stdout)
    assert set(j["classes"]) == {"quick/native/loadgen", "quick/emulated/loadgen"}
    assert all(len(c["frontier"]) == 1 for c in j["classes"].values()) and j["units"]["latency"]["label"] == "ms"
    one = json.loads(_cli("--board", url, "--class", "quick/emulated/loadgen", "--json").stdout)
    assert list(one["classes"]) == ["quick/emulated/loadgen"] and one["count"] == 1


# --- MultiStream: its own column and objective, never a SingleStream latency ------------------------------------


def _ms_detail(p99: float) -> dict:
    d = _detail("linux/amd64")
    d["predicate"]["metrics"]["multistream"] = {"scenario": "MultiStream", "samples_per_query": 8, "p99_s": p99}
    return d


def test_multistream_has_its_own_column_objective_and_frontier(tmp_path: Path):
    """A MultiStream p99 (a query of 8 images) is stored and ranked apart: the latency objective never reads it,
    and the multistream objective only ranks results that ran MultiStream."""
    from packager.scoreboard.store import OBJECTIVE_COLUMNS

    assert OBJECTIVE_COLUMNS["latency"] == "latency_p90_s" and OBJECTIVE_COLUMNS["multistream"] == "multistream_p99_s"
    assert OBJECTIVE_UNITS["multistream"].show(0.0812) == "81.2 ms per query of 8"
    single = _row(1, top1=0.9, latency=0.005)  # a fast SingleStream latency must not rank against query latencies
    ms_a = replace(_row(2, top1=0.6, latency=None), multistream_p99_s=0.08)
    ms_b = replace(_row(3, top1=0.5, latency=None), multistream_p99_s=0.09)
    with Board(f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.insert(single, _detail("linux/amd64"))
        b.insert(ms_a, _ms_detail(0.08))
        b.insert(ms_b, _ms_detail(0.09))
        rows = {r.artifact: r for r in b.rows()}
    assert rows["art2"].multistream_p99_s == 0.08 and rows["art1"].multistream_p99_s is None
    ms_objs = (Objective("accuracy", Direction.MAX), Objective("multistream", Direction.MIN))
    from packager.scoreboard.pareto import Missing

    front = frontiers_by_class(list(rows.values()), ms_objs, missing=Missing.EXCLUDE)["quick/native/loadgen"]
    assert front.front == (ms_a.bundle_digest,)  # art1 has no MultiStream figure: its SingleStream one is not used
    lat = frontiers_by_class(list(rows.values()), OBJS)["quick/native/loadgen"]
    assert lat.front == (single.bundle_digest,)  # and the query latencies are not on the latency one


def test_migration_6_backfills_multistream_from_the_signed_predicate(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Board(url, migrate=False)
    with old.engine.begin() as conn:
        board_schema.create(conn)
        for v, m in enumerate(MIGRATIONS[:5], start=1):
            m(conn)
            conn.execute(board_schema.insert().values(version=v, applied_at="then"))
        for n, detail in ((8, _ms_detail(0.07)), (9, _detail("linux/amd64"))):
            values = {k: v for k, v in _row(n).to_json().items() if k != "multistream_p99_s"}
            conn.execute(sa.table("results", *(sa.column(k) for k in [*values, "detail"])).insert().values(
                **values, detail=json.dumps(detail)))
    old.close()
    with Board(url) as b:
        assert {r.artifact: r.multistream_p99_s for r in b.rows()} == {"art8": 0.07, "art9": None}
