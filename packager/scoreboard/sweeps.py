"""Sweeps on the board: a design-space exploration (packager/explore.py) as one group.

A sweep names its parent artifact and its space; each point names its knob values, its
status (done or failed, with the reason) and, when done, the verified result it published
(``results.bundle_digest``). The group's frontier is computed within one measurement
class at a time, over the sweep's own results, like the board's.

Recording is idempotent per (sweep, point key): a resumed sweep that publishes a point
again changes nothing, and a failed point retried later is updated to its new status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from packager.errors import BadInput
from packager.scoreboard.pareto import Frontier, Missing, Objective, parse_objectives
from packager.scoreboard.store import (
    OBJECTIVE_COLUMNS,
    ROW_FIELDS,
    Board,
    ResultRow,
    frontiers_by_class,
    now_iso,
    results,
    sweep_points,
    sweeps,
)

# A run-time sweep moves latency and throughput at one accuracy: all three are its objectives.
SWEEP_OBJECTIVES = "accuracy:max,latency:min,throughput:max"
STATUSES = ("done", "failed")


@dataclass(frozen=True)
class SweepPoint:
    key: str
    knobs: Mapping[str, Any]
    status: str
    bundle_digest: str | None
    image_digest: str | None
    error: str | None
    row: ResultRow | None = None


@dataclass(frozen=True)
class SweepSummary:
    id: str
    artifact: str
    created_at: str
    done: int
    failed: int


@dataclass(frozen=True)
class Sweep:
    summary: SweepSummary
    space: str
    points: tuple[SweepPoint, ...]
    frontiers: dict[str, Frontier]  # per measurement class, over the sweep's own results

    def on_frontier(self, point: SweepPoint) -> bool:
        return point.row is not None and any(point.row.bundle_digest in f.front for f in self.frontiers.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON export: the group, each point's knobs and result, the frontier by class."""
        return {
            "id": self.summary.id,
            "artifact": self.summary.artifact,
            "created_at": self.summary.created_at,
            "space": self.space,
            "objectives": [str(o) for o in next(iter(self.frontiers.values())).objectives] if self.frontiers else [],
            "frontiers": {k: list(f.front) for k, f in self.frontiers.items()},
            "points": [
                {"key": p.key, "knobs": dict(p.knobs), "status": p.status, "bundle_digest": p.bundle_digest,
                 "image_digest": p.image_digest, "error": p.error, "pareto": self.on_frontier(p),
                 "result": p.row.to_json() if p.row else None}
                for p in self.points
            ],
        }


def sweep_id(artifact: str, space_text: str, dataset_identity: str) -> str:
    """One id for one (artifact, space, data set): rerunning the same command continues the same sweep."""
    return hashlib.sha256(json.dumps([artifact, space_text, dataset_identity]).encode()).hexdigest()[:16]


def record_sweep(board: Board, sid: str, artifact: str, space_text: str) -> None:
    values = {"id": sid, "artifact": artifact, "space": space_text,
              "space_sha256": hashlib.sha256(space_text.encode()).hexdigest(), "created_at": now_iso()}
    with board.write() as conn, conn.begin():
        conn.execute(_insert(board, sweeps, values, ["id"], update=()))


def record_point(board: Board, sid: str, point: SweepPoint) -> None:
    if point.status not in STATUSES:
        raise BadInput(f"sweep point status {point.status!r} is not one of {', '.join(STATUSES)}", field="status")
    values = {"sweep_id": sid, "point_key": point.key, "knobs": json.dumps(dict(point.knobs), sort_keys=True),
              "status": point.status, "bundle_digest": point.bundle_digest, "image_digest": point.image_digest,
              "error": point.error, "published_at": now_iso()}
    with board.write() as conn, conn.begin():
        conn.execute(_insert(board, sweep_points, values, ["sweep_id", "point_key"],
                             update=("status", "bundle_digest", "image_digest", "error", "published_at")))


def _insert(board: Board, table: sa.Table, values: Mapping[str, Any], keys: Sequence[str], update: Sequence[str]):
    if board.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(**values)
    if update:
        return stmt.on_conflict_do_update(index_elements=list(keys), set_={k: stmt.excluded[k] for k in update})
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


def list_sweeps(board: Board, *, artifact: str = "") -> list[SweepSummary]:
    done = sa.func.sum(sa.case((sweep_points.c.status == "done", 1), else_=0))
    failed = sa.func.sum(sa.case((sweep_points.c.status == "failed", 1), else_=0))
    q = (sa.select(sweeps.c.id, sweeps.c.artifact, sweeps.c.created_at, done, failed)
         .select_from(sweeps.outerjoin(sweep_points, sweep_points.c.sweep_id == sweeps.c.id))
         .group_by(sweeps.c.id, sweeps.c.artifact, sweeps.c.created_at)
         .order_by(sweeps.c.created_at.desc()))
    if artifact:
        q = q.where(sweeps.c.artifact == artifact)
    with board.engine.connect() as conn:
        return [SweepSummary(i, a, c, int(d or 0), int(f or 0)) for i, a, c, d, f in conn.execute(q).all()]


def sweeps_of_results(board: Board) -> dict[str, tuple[str, ...]]:
    """Each result that a sweep published: its bundle digest → the sweeps it belongs to (the main table links them)."""
    q = (sa.select(sweep_points.c.bundle_digest, sweep_points.c.sweep_id)
         .where(sweep_points.c.bundle_digest.is_not(None)).distinct()
         .order_by(sweep_points.c.bundle_digest, sweep_points.c.sweep_id))
    out: dict[str, tuple[str, ...]] = {}
    with board.engine.connect() as conn:
        for digest, sid in conn.execute(q).all():
            out[digest] = (*out.get(digest, ()), sid)
    return out


def sweep_token(board: Board) -> tuple[int, int]:
    """(points with a result, highest point id): it moves whenever a point is added or gains its result (a
    failed point retried is updated in place), which the board's change token alone does not see: a sweep
    records its point after publishing the result."""
    q = sa.select(sa.func.count(sweep_points.c.bundle_digest), sa.func.max(sweep_points.c.id))
    with board.engine.connect() as conn:
        n, top = conn.execute(q).one()
    return int(n or 0), int(top or 0)


def dataset_note(board: Board, sweep: Sweep) -> str:
    """What the sweep's top-1 figures are over, as its first result's signed metrics say. Every point of a sweep
    ran on one data set: the sweep's id is keyed by the data set's identity (``sweep_id``)."""
    first = next((p.row for p in sweep.points if p.row is not None), None)
    found = board.get(first.bundle_digest) if first is not None else None
    if found is None:
        return ""
    predicate = found[1].get("predicate")
    metrics = predicate.get("metrics") if isinstance(predicate, Mapping) else None
    note = metrics.get("dataset_note") if isinstance(metrics, Mapping) else None
    return note if isinstance(note, str) else ""


def load_sweep(board: Board, sid: str, *, objectives: Sequence[Objective] | str = SWEEP_OBJECTIVES,
               missing: Missing = Missing.WORST) -> Sweep | None:
    """The sweep with its points (results joined) and its frontier per measurement class; None if unknown."""
    objs = parse_objectives(objectives, known=OBJECTIVE_COLUMNS) if isinstance(objectives, str) else tuple(objectives)
    with board.engine.connect() as conn:
        head = conn.execute(sa.select(sweeps).where(sweeps.c.id == sid)).first()
        if head is None:
            return None
        q = (sa.select(sweep_points.c.point_key, sweep_points.c.knobs, sweep_points.c.status,
                       sweep_points.c.bundle_digest, sweep_points.c.image_digest, sweep_points.c.error,
                       *(results.c[f] for f in ROW_FIELDS))
             .select_from(sweep_points.outerjoin(results, results.c.bundle_digest == sweep_points.c.bundle_digest))
             .where(sweep_points.c.sweep_id == sid).order_by(sweep_points.c.id))
        fetched = conn.execute(q).all()
    points = []
    for r in fetched:
        row = ResultRow(*r[6:]) if r[6] is not None else None
        points.append(SweepPoint(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5], row))
    rows = [p.row for p in points if p.row is not None]
    summary = SweepSummary(head.id, head.artifact, head.created_at, sum(p.status == "done" for p in points),
                           sum(p.status == "failed" for p in points))
    return Sweep(summary, head.space, tuple(points), frontiers_by_class(rows, objs, missing=missing))
