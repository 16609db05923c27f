"""The board's sweep group on PostgreSQL (the same server the concurrency test starts): recorded twice, a failed
point updated in place, loaded with its per-class frontier, served as JSON; the SQL differs from SQLite's upserts."""

from __future__ import annotations

from pathlib import Path

import pytest
import synthetic_results as synthetic
from test_scoreboard_concurrency import _create_database, postgres  # noqa: F401  (the fixture)

from packager.bundle.keys import TrustStore, generate_keypair
from packager.scoreboard.publish import publish
from packager.scoreboard.store import Board
from packager.scoreboard.sweeps import (
    SweepPoint,
    dataset_note,
    list_sweeps,
    load_sweep,
    record_point,
    record_sweep,
    sweep_token,
    sweeps_of_results,
)

pytestmark = [pytest.mark.database]


def test_a_sweep_group_on_postgresql(postgres, tmp_path: Path) -> None:  # noqa: F811
    url = _create_database(postgres, "sweeps")
    pair = generate_keypair(tmp_path / "keys", "evaluator")
    trust = TrustStore.load([pair.public_path])
    with Board(url) as board:
        for _ in range(2):  # a resumed sweep records its group again: still one
            record_sweep(board, "s1", "demo-ort", "run: {threads: [1, 2]}\n")
        for i, (lat, ips) in enumerate(((0.010, 100.0), (0.020, 90.0))):
            spec = synthetic.Spec(latency_s=lat, throughput_ips=ips, run_seed=i)
            p = publish(synthetic.make_bundle(tmp_path / f"b{i}", spec, pair.private_path), board, trust)
            record_point(board, "s1", SweepPoint(f"k{i}", {"run.threads": i + 1}, "done", p.bundle_digest,
                                                 p.row.image_digest, None))
            record_point(board, "s1", SweepPoint(f"k{i}", {"run.threads": i + 1}, "done", p.bundle_digest,
                                                 p.row.image_digest, None))
        record_point(board, "s1", SweepPoint("k9", {"run.threads": 4}, "failed", None, None, "first"))
        token = sweep_token(board)
        record_point(board, "s1", SweepPoint("k9", {"run.threads": 4}, "failed", None, None, "second"))
        (summary,) = list_sweeps(board)
        sweep = load_sweep(board, "s1")
        # what the main table links and what tells its page cache that a point gained a result
        assert sorted(sweeps_of_results(board).values()) == [("s1",), ("s1",)] and sweep_token(board) == token
        assert dataset_note(board, sweep) == synthetic.SYNTHETIC_NOTE
        record_point(board, "s1", SweepPoint("k9", {"run.threads": 4}, "done", p.bundle_digest, p.row.image_digest, None))
        assert sweep_token(board)[0] == token[0] + 1
    assert (summary.done, summary.failed) == (2, 1)
    assert sweep is not None and [p.knobs["run.threads"] for p in sweep.points if sweep.on_frontier(p)] == [1]
    assert sweep.to_json()["points"][2]["error"] == "second"
