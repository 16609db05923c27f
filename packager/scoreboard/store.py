"""The board's data layer: one SQLAlchemy Core schema for SQLite and PostgreSQL.

Migrations are a small versioned list (``board_schema`` holds the applied
version), not alembic: the schema is one family of tables owned by this
module, every ``publish`` process opens the board and must migrate it safely
*at the same time as seven others*, and alembic brings an ini file, a script
directory and no locking of its own. Here each migration runs in the same
transaction as its version bump, under a lock that serialises migrators:
``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite (whose
DDL is transactional too). A second migrator then sees the new version and
does nothing.

Idempotent publishing rests on a UNIQUE bundle digest and ``INSERT … ON
CONFLICT DO NOTHING``: the database, not a read-then-write in Python, decides
which of two racing publishers inserts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from packager.errors import BadInput, EnvironmentMissing
from packager.scoreboard.pareto import Frontier, Missing, Objective, pareto_front_columns

log = logging.getLogger(__name__)

DEFAULT_BOARD = "sqlite:///scoreboard.db"
SQLITE_BUSY_TIMEOUT_S = 120
# Any fixed 64-bit number: the advisory lock that serialises migrations.
_PG_MIGRATION_LOCK = 0x5245515545535431

metadata = sa.MetaData()

board_schema = sa.Table(
    "board_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)


def _results_table(md: sa.MetaData) -> sa.Table:
    """The results table as of migration 1; migrations build their own copy so they never see later additions."""
    return sa.Table(
        "results",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bundle_digest", sa.String(71), nullable=False, unique=True),
        sa.Column("artifact", sa.String(200), nullable=False),
        sa.Column("artifact_version", sa.String(100), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("framework", sa.String(100), nullable=False),
        sa.Column("framework_version", sa.String(100), nullable=False),
        sa.Column("platform", sa.String(50), nullable=False),
        sa.Column("precision", sa.String(20), nullable=False),
        sa.Column("device", sa.String(50), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("top1", sa.Float, nullable=False),
        sa.Column("top5", sa.Float, nullable=False),
        sa.Column("latency_mean_s", sa.Float, nullable=True),
        sa.Column("latency_p90_s", sa.Float, nullable=True),
        sa.Column("throughput_ips", sa.Float, nullable=True),
        sa.Column("price_usd", sa.Float, nullable=True),
        sa.Column("power_w", sa.Float, nullable=True),
        sa.Column("min_top1", sa.Float, nullable=True),
        sa.Column("image_digest", sa.String(71), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signer_role", sa.String(20), nullable=False),
        sa.Column("machine", sa.String(200), nullable=False),
        sa.Column("published_at", sa.String(40), nullable=False),
        # Everything the result page shows beyond the summary: the signed predicate,
        # provenance, build record, manifest text and the envelope, as JSON text.
        # Never selected for the table, so a 10,000-row page stays cheap.
        sa.Column("detail", sa.Text, nullable=False),
    )


def _measurement_column() -> sa.Column:
    # "mode/execution/driver" (packager.results.Measurement.key): results of different classes are never compared.
    return sa.Column("measurement", sa.String(40), nullable=True)


def _multistream_column() -> sa.Column:
    # MultiStream's p99 per-query latency (a query of 8 images): its own column, never the SingleStream latency's.
    return sa.Column("multistream_p99_s", sa.Float, nullable=True)


results = _results_table(metadata)
results.append_column(_measurement_column())
results.append_column(_multistream_column())


def _m1_tables(conn: Connection) -> None:
    _results_table(sa.MetaData()).create(conn)


def _m2_filter_indexes(conn: Connection) -> None:
    table = _results_table(sa.MetaData())
    for col in ("image_digest", "artifact", "platform", "manifest_sha256"):
        sa.Index(f"ix_results_{col}", table.c[col]).create(conn)


def _m3_measurement_class(conn: Connection) -> None:
    """The measurement class as a column; rows published before it get the class their signed predicate implies."""
    conn.execute(sa.text("ALTER TABLE results ADD COLUMN measurement VARCHAR(40)"))
    table = _results_table(sa.MetaData())
    table.append_column(_measurement_column())
    for rid, detail in conn.execute(sa.select(table.c.id, table.c.detail)).all():
        conn.execute(table.update().where(table.c.id == rid).values(measurement=measurement_key(json.loads(detail))))
    sa.Index("ix_results_measurement", table.c.measurement).create(conn)


def _sweep_tables(md: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """A design-space sweep (packager/explore.py) and its points, as of migration 4."""
    sweep = sa.Table(
        "sweeps",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("artifact", sa.String(200), nullable=False),  # the parent artifact the sweep varies
        sa.Column("space", sa.Text, nullable=False),  # the space file as given (YAML text)
        sa.Column("space_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    point = sa.Table(
        "sweep_points",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sweep_id", sa.String(64), sa.ForeignKey("sweeps.id"), nullable=False, index=True),
        sa.Column("point_key", sa.String(64), nullable=False),  # image digest + run config + data set
        sa.Column("knobs", sa.Text, nullable=False),  # JSON: the point's knob values
        sa.Column("status", sa.String(20), nullable=False),  # done | failed
        sa.Column("bundle_digest", sa.String(71), nullable=True, index=True),  # results.bundle_digest when done
        sa.Column("image_digest", sa.String(71), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("published_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("sweep_id", "point_key", name="uq_sweep_points_key"),
    )
    return sweep, point


def _m4_sweeps(conn: Connection) -> None:
    """Sweeps as groups: a sweep names its parent artifact and space; each point its knobs, status and result."""
    for table in _sweep_tables(sa.MetaData()):
        table.create(conn)


sweeps, sweep_points = _sweep_tables(metadata)


def _reproductions_table(md: sa.MetaData) -> sa.Table:
    """Verified reproduce records (packager/bundle/reproduction.py), as of migration 5: the rebuild evidence."""
    return sa.Table(
        "reproductions",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_digest", sa.String(71), nullable=False, unique=True),  # sha256 of the signed statement
        sa.Column("bundle_digest", sa.String(71), nullable=False, index=True),  # results.bundle_digest it rebuilt
        sa.Column("index_digest", sa.String(71), nullable=False, index=True),  # what the bundle names
        sa.Column("rebuilt_digest", sa.String(71), nullable=False),  # what the rebuild gave
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signer_role", sa.String(20), nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("envelope", sa.Text, nullable=False),  # the signed record itself, so anyone can re-verify
        sa.Column("published_at", sa.String(40), nullable=False),
    )


def _m5_reproductions(conn: Connection) -> None:
    _reproductions_table(sa.MetaData()).create(conn)


reproductions = _reproductions_table(metadata)


def _m6_multistream(conn: Connection) -> None:
    """MultiStream's p99 per-query latency as a column; rows published before it get it from their signed predicate."""
    conn.execute(sa.text("ALTER TABLE results ADD COLUMN multistream_p99_s FLOAT"))
    table = _results_table(sa.MetaData())
    table.append_column(_multistream_column())
    for rid, detail in conn.execute(sa.select(table.c.id, table.c.detail)).all():
        pred = json.loads(detail).get("predicate")
        ms = ((pred.get("metrics") or {}).get("multistream") or {}) if isinstance(pred, Mapping) else {}
        if isinstance(ms, Mapping) and isinstance(ms.get("p99_s"), (int, float)):
            conn.execute(table.update().where(table.c.id == rid).values(multistream_p99_s=ms["p99_s"]))

# Append only: a released migration is never edited, a change is a new entry.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_m1_tables, _m2_filter_indexes, _m3_measurement_class,
                                                        _m4_sweeps, _m5_reproductions, _m6_multistream)
SCHEMA_VERSION = len(MIGRATIONS)

# --- rows -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One published result: the summary the table, the plots and Pareto use."""

    bundle_digest: str
    artifact: str
    artifact_version: str
    manifest_sha256: str | None
    model: str
    framework: str
    framework_version: str
    platform: str
    precision: str
    device: str
    stage: str
    samples: int
    top1: float
    top5: float
    latency_mean_s: float | None
    latency_p90_s: float | None
    throughput_ips: float | None
    price_usd: float | None
    power_w: float | None
    min_top1: float | None
    image_digest: str
    key_id: str
    signer_role: str
    machine: str
    published_at: str
    # The measurement class, "mode/execution/driver"; "" until Board.insert derives it from the signed predicate.
    measurement: str = ""
    # MultiStream: the 99th percentile of a query's latency, a query being 8 images; not a SingleStream latency.
    multistream_p99_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies, and the API serialises 10,000 of these.
        return {f: getattr(self, f) for f in ROW_FIELDS}


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))
FILTER_FIELDS: tuple[str, ...] = ("model", "framework", "platform", "precision", "device", "measurement")
SORT_FIELDS: frozenset[str] = frozenset(ROW_FIELDS)

# Objective name → row attribute. Latency is the SingleStream 90th percentile
# (MLPerf's SingleStream metric), throughput the best Offline rate over batch sizes.
OBJECTIVE_COLUMNS: Mapping[str, str] = {
    "accuracy": "top1",
    "top1": "top1",
    "top5": "top5",
    "latency": "latency_p90_s",
    "latency_mean": "latency_mean_s",
    "multistream": "multistream_p99_s",
    "throughput": "throughput_ips",
    "price": "price_usd",
    "power": "power_w",
}


def objective_values(row: ResultRow, names: Iterable[str]) -> dict[str, float | None]:
    return {n: getattr(row, OBJECTIVE_COLUMNS[n]) for n in names}


@dataclass(frozen=True)
class Unit:
    """How a stored value is shown: stored in SI base units (seconds, fractions), shown as ``value * scale`` ``label``."""

    label: str
    scale: float = 1.0

    def show(self, value: float | None, digits: int = 4) -> str:
        return "—" if value is None else f"{value * self.scale:.{digits}g} {self.label}"


# Every numeric column and objective carries its unit; the CLI, API and page label axes and headers with it.
COLUMN_UNITS: Mapping[str, Unit] = {
    "top1": Unit("%", 100.0),
    "top5": Unit("%", 100.0),
    "min_top1": Unit("%", 100.0),
    "latency_mean_s": Unit("ms", 1000.0),
    "latency_p90_s": Unit("ms", 1000.0),
    "multistream_p99_s": Unit("ms per query of 8", 1000.0),
    "throughput_ips": Unit("images/s"),
    "price_usd": Unit("USD"),
    "power_w": Unit("W"),
    "samples": Unit("images"),
}
OBJECTIVE_UNITS: Mapping[str, Unit] = {name: COLUMN_UNITS[col] for name, col in OBJECTIVE_COLUMNS.items()}


def objective_title(name: str) -> str:
    """``latency (ms)``: an objective's name with its unit."""
    return f"{name} ({OBJECTIVE_UNITS[name].label})"


# --- measurement classes ------------------------------------------------------------


def measurement_key(detail: Mapping[str, Any]) -> str:
    """The class key of a published result, from its signed predicate (``detail["predicate"]``).

    A result signed with ``metrics.measurement`` carries its class. One signed before classes existed gets the class
    its other signed fields imply: mode ``quick`` (submission mode did not exist); driver ``loadgen`` when
    ``metrics.driver`` names mlperf-loadgen, else ``builtin``; execution ``emulated`` when the engine that ran it
    reported another architecture than the result's platform (``environment.sandbox.engine.arch``), and where no
    engine architecture is recorded, ``emulated`` for any platform but linux/amd64: every such result on this
    project's boards came from QEMU on an amd64 host. A row without a predicate (hand-inserted) is ``unknown``.
    """
    pred = detail.get("predicate") if isinstance(detail, Mapping) else None
    metrics = pred.get("metrics") if isinstance(pred, Mapping) else None
    if not isinstance(metrics, Mapping):
        return "unknown"
    m = metrics.get("measurement")
    if isinstance(m, Mapping) and {"mode", "execution", "driver"} <= set(m):
        return f"{m['mode']}/{m['execution']}/{m['driver']}"
    driver = "loadgen" if str(metrics.get("driver", "")).startswith("mlperf-loadgen") else "builtin"
    platform = str(metrics.get("platform", ""))
    env = pred.get("environment") if isinstance(pred.get("environment"), Mapping) else {}
    engine = (env.get("sandbox") or {}).get("engine") if isinstance(env.get("sandbox"), Mapping) else None
    arch = engine.get("arch") if isinstance(engine, Mapping) else None
    arch_platform = {"amd64": "linux/amd64", "x86_64": "linux/amd64", "arm64": "linux/arm64", "aarch64": "linux/arm64",
                     "arm": "linux/arm/v7"}.get(str(arch)) if arch else None
    if arch_platform:
        execution = "native" if arch_platform == platform else "emulated"
    else:
        execution = "native" if platform == "linux/amd64" else "emulated"
    return f"quick/{execution}/{driver}"


def frontiers_by_class(rows: Sequence[ResultRow], objectives: Sequence[Objective], *,
                       missing: Missing = Missing.WORST) -> dict[str, Frontier]:
    """One Pareto frontier per measurement class: numbers of different classes never share a frontier."""
    groups: dict[str, list[ResultRow]] = {}
    for r in rows:
        groups.setdefault(r.measurement or "unknown", []).append(r)
    out = {}
    for key in sorted(groups):
        members = groups[key]
        columns = {o.name: [getattr(r, OBJECTIVE_COLUMNS[o.name]) for r in members] for o in objectives}
        out[key] = pareto_front_columns([r.bundle_digest for r in members], columns, objectives,
                                        missing=missing)
    return out


@dataclass(frozen=True)
class Filters:
    """Exact-match filters; an empty value means "any"."""

    model: str = ""
    framework: str = ""
    platform: str = ""
    precision: str = ""
    device: str = ""
    measurement: str = ""  # a class key, "mode/execution/driver"

    def active(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}

    def matches(self, row: ResultRow) -> bool:
        return all(getattr(row, k) == v for k, v in self.active().items())


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- engine -----------------------------------------------------------------------


def normalise_url(url: str) -> str:
    """Accept ``sqlite:///file.db`` and ``postgresql://…``; pick the psycopg 3 driver for the latter."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as e:
        raise BadInput(f"{url!r} is not a database URL (e.g. sqlite:///scoreboard.db or postgresql://user@host/db)", field="--board") from e
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise BadInput(f"{backend!r} boards are not supported: use sqlite:///FILE or postgresql://…", field="--board")
    return parsed.render_as_string(hide_password=False)


def _sqlite_events(engine: Engine) -> None:
    """Take SQLite's transaction control from pysqlite so writers can ask for BEGIN IMMEDIATE.

    pysqlite opens transactions lazily and as DEFERRED: two processes that both
    read and then write deadlock on the lock upgrade (SQLITE_BUSY at once,
    busy_timeout notwithstanding). Writers here take the write lock up front
    and wait their turn for up to ``SQLITE_BUSY_TIMEOUT_S``.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        # WAL lets the web server read while publishers write. The mode is stored
        # in the file, so only the first connection ever switches it.
        try:
            cur.execute("PRAGMA journal_mode = WAL")
        except Exception as e:  # e.g. a read-only directory: rollback journal still works
            log.debug("could not switch %s to WAL: %s", engine.url, e)
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("board_write") else "BEGIN")


def create_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _sqlite_events(engine)
    else:
        try:
            engine = sa.create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError as e:
            raise EnvironmentMissing(f"PostgreSQL driver missing: {e}", fix="pip install 'psycopg[binary]'") from e
    return engine


class Board:
    """A scoreboard database: migrate on open, insert idempotently, query summaries."""

    def __init__(self, url: str = DEFAULT_BOARD, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name
        if migrate:
            self.migrate()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> Any:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        return self.engine.connect().execution_options(board_write=True)

    def write(self) -> Any:
        """A connection whose transactions take the write lock up front (for the board's other tables: sweeps)."""
        return self._write()

    # --- migrations ---------------------------------------------------------------

    def schema_version(self) -> int:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.max(board_schema.c.version))).scalar() or 0)
        except sa.exc.OperationalError as e:
            raise EnvironmentMissing(f"cannot reach the board {self.engine.url.render_as_string()}: {e.orig}") from e
        except sa.exc.ProgrammingError:
            return 0  # PostgreSQL: no board_schema table yet

    def migrate(self) -> int:
        """Bring the schema to ``SCHEMA_VERSION``; safe when several processes do it at once."""
        try:
            with self._write() as conn, conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                board_schema.create(conn, checkfirst=True)
                current = int(conn.execute(sa.select(sa.func.max(board_schema.c.version))).scalar() or 0)
                if current > SCHEMA_VERSION:
                    raise BadInput(
                        f"board schema version {current} is newer than this request-pack knows ({SCHEMA_VERSION}); upgrade request-pack",
                        field="--board",
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    log.info("board: migration %d (%s)", version, MIGRATIONS[version - 1].__name__.lstrip("_"))
                    MIGRATIONS[version - 1](conn)
                    conn.execute(board_schema.insert().values(version=version, applied_at=now_iso()))
                return SCHEMA_VERSION
        except sa.exc.OperationalError as e:
            raise EnvironmentMissing(f"cannot open the board {self.engine.url.render_as_string()}: {e.orig}") from e

    # --- writes --------------------------------------------------------------------

    def insert(self, row: ResultRow, detail: Mapping[str, Any]) -> bool:
        """Insert unless the bundle digest is already there; True when this call inserted it."""
        values = row.to_json() | {"detail": json.dumps(detail, sort_keys=True)}
        if not values["measurement"]:
            values["measurement"] = measurement_key(detail)  # from the signed predicate stored beside it
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # RETURNING, not rowcount: with an implicit RETURNING, drivers disagree on rowcount.
        stmt = insert(results).values(**values).on_conflict_do_nothing(index_elements=["bundle_digest"]).returning(results.c.id)
        with self._write() as conn, conn.begin():
            return conn.execute(stmt).first() is not None

    # --- reads ---------------------------------------------------------------------

    def _summary_select(self) -> sa.Select:
        return sa.select(*(results.c[f] for f in ROW_FIELDS))

    def rows(
        self,
        filters: Filters = Filters(),
        *,
        sort: str = "top1",
        descending: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ResultRow]:
        if sort not in SORT_FIELDS:
            raise BadInput(f"cannot sort by {sort!r}; one of: {', '.join(sorted(SORT_FIELDS))}", field="sort")
        q = self._summary_select()
        for k, v in filters.active().items():
            q = q.where(results.c[k] == v)
        col = results.c[sort]
        # NULLs last in both directions: a missing power reading is never "best".
        q = q.order_by(col.is_(None), col.desc() if descending else col.asc(), results.c.id)
        if limit is not None:
            q = q.limit(limit).offset(offset)
        with self.engine.connect() as conn:
            fetched = conn.execute(q).all()  # fetchall: one driver call instead of one per row
        return [ResultRow(*r) for r in fetched]

    def change_token(self) -> tuple[int, int, int]:
        """(row count, highest id, reproduce records): both are only ever appended, so an unchanged token means unchanged rows."""
        with self.engine.connect() as conn:
            n, top = conn.execute(sa.select(sa.func.count(), sa.func.max(results.c.id)).select_from(results)).one()
            r = conn.execute(sa.select(sa.func.count()).select_from(reproductions)).scalar()
        return int(n or 0), int(top or 0), int(r or 0)

    def add_reproduction(self, row: "ReproductionRow", envelope: str) -> bool:
        """Store a verified reproduce record unless it is there already; True when this call stored it."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = (insert(reproductions).values(**asdict(row), envelope=envelope)
                .on_conflict_do_nothing(index_elements=["record_digest"]).returning(reproductions.c.id))
        with self._write() as conn, conn.begin():
            return conn.execute(stmt).first() is not None

    def reproductions(self) -> list["ReproductionRow"]:
        q = sa.select(*(reproductions.c[f.name] for f in fields(ReproductionRow))).order_by(reproductions.c.id)
        with self.engine.connect() as conn:
            return [ReproductionRow(*r) for r in conn.execute(q).all()]

    def count(self, filters: Filters = Filters()) -> int:
        q = sa.select(sa.func.count()).select_from(results)
        for k, v in filters.active().items():
            q = q.where(results.c[k] == v)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def get(self, bundle_digest: str) -> tuple[ResultRow, dict[str, Any]] | None:
        q = self._summary_select().add_columns(results.c.detail).where(results.c.bundle_digest == bundle_digest)
        with self.engine.connect() as conn:
            r = conn.execute(q).first()
        if r is None:
            return None
        return ResultRow(*r[:-1]), json.loads(r[-1])

    def facets(self) -> dict[str, list[str]]:
        """Distinct values of each filter column, for the filter menus."""
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for f in FILTER_FIELDS:
                out[f] = [v for (v,) in conn.execute(sa.select(results.c[f]).distinct().order_by(results.c[f]))]
        return out


@dataclass(frozen=True)
class ReproductionRow:
    """What a verified reproduce record says (its signed predicate), as the board stores it."""

    record_digest: str
    bundle_digest: str
    index_digest: str
    rebuilt_digest: str
    key_id: str
    signer_role: str
    archive_sha256: str
    published_at: str


def rows_by(rows: Sequence[ResultRow], attr: str) -> dict[str, list[ResultRow]]:
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        out.setdefault(getattr(r, attr), []).append(r)
    return out
