"""The board's web site: results table, Pareto plots, a page per result, JSON API and CSV.

One view model (``BoardView``) feeds the HTML page, the JSON API and the CSV
export, so the table, the plots and the exports always show the same rows,
the same frontier and the same badges.

A full board stays light in the browser (``benchmarks/scoreboard.py --chromium``):
the table pages on the server (``page``, ``page_size``, sort and filters in the
query string), the plots get compact columns (``plots.py``) drawn with WebGL
past a few thousand points, responses are gzipped, and plotly.js is served by
this app from the installed ``plotly`` package under a content-hashed URL that
the browser caches for good. No CDN: the board works offline.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import logging
import math
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from packager.errors import BadInput, CheckFailed
from packager.scoreboard.badges import Award, Evidence, Tolerances
from packager.scoreboard.pareto import Frontier, Missing, Objective, parse_objectives
from packager.scoreboard.plots import pareto_plots, plot_data, script_json
from packager.scoreboard.store import (
    FILTER_FIELDS,
    OBJECTIVE_COLUMNS,
    ROW_FIELDS,
    SORT_FIELDS,
    Board,
    Filters,
    ResultRow,
    frontiers_by_class,
)
from packager.scoreboard.sweeps import sweep_token, sweeps_of_results
from packager.scoreboard.sweepweb import add_sweep_routes

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
DEFAULT_OBJECTIVES = "accuracy:max,latency:min,price:min,power:min"
# Rows per table page: the table is for reading; the plots, JSON and CSV hold every row.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# gzip level for pages and the API. Most of a full page is digests (random hex), which no level
# squeezes much: on the 10,000-result page level 1 gives 548 kB in 27 ms, level 6 516 kB in 131 ms.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class BoardView:
    filters: Filters
    sort: str
    descending: bool
    objectives: tuple[Objective, ...]
    rows: tuple[ResultRow, ...]
    total: int  # rows on the board, before filters
    frontiers: dict[str, Frontier]  # one per measurement class: numbers of different classes never share one
    evidence: Evidence
    facets: dict[str, list[str]]
    sweeps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # bundle digest → the sweeps it is a point of

    @cached_property
    def frontier(self) -> Frontier:
        """Every class's frontier together (in row order): a row is starred when it is on its own class's frontier."""
        front = set().union(*(f.front for f in self.frontiers.values()))
        excluded = set().union(*(f.excluded for f in self.frontiers.values()))
        return Frontier(
            self.objectives,
            tuple(r.bundle_digest for r in self.rows if r.bundle_digest in front),
            tuple(r.bundle_digest for r in self.rows if r.bundle_digest in excluded),
            next(iter(self.frontiers.values())).missing if self.frontiers else Missing.WORST,
        )

    @cached_property
    def front(self) -> frozenset[str]:
        return frozenset(self.frontier.front)  # type: ignore[arg-type]

    def on_frontier(self, row: ResultRow) -> bool:
        return row.bundle_digest in self.front

    def awards(self, row: ResultRow) -> tuple[Award, ...]:
        """Badges are computed for the rows actually shown or exported, not for the whole board up front."""
        return self.evidence.awards(row)

    def record(self, row: ResultRow) -> dict[str, Any]:
        return row.to_json() | {
            "pareto": self.on_frontier(row),
            "badges": [a.badge.value for a in self.awards(row) if a.awarded],
            "sweeps": list(self.sweeps.get(row.bundle_digest, ())),
        }


@dataclass(frozen=True)
class Snapshot:
    """Every row of the board with what is derived from all of them (badge evidence, filter menus).

    The web app keeps one and reloads it only when ``Board.change_token``
    moves, so a page view of an unchanged 10,000-result board costs one
    COUNT/MAX query instead of reading every row again.
    """

    token: tuple[int, ...]
    rows: tuple[ResultRow, ...]
    evidence: Evidence
    facets: dict[str, list[str]]
    sweeps: dict[str, tuple[str, ...]]

    @classmethod
    def load(cls, board: Board) -> "Snapshot":
        token = change_token(board)
        rows = tuple(board.rows())
        facets = {f: sorted({getattr(r, f) for r in rows}) for f in FILTER_FIELDS}
        return cls(token, rows, Evidence(rows, reproductions=board.reproductions()), facets, sweeps_of_results(board))


def change_token(board: Board) -> tuple[int, ...]:
    """The board's results and reproductions, and its sweeps' points: a sweep records its point after publishing."""
    return board.change_token() + sweep_token(board)


class _SnapshotCache:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.current: Snapshot | None = None
        self.lock = threading.Lock()

    def get(self) -> Snapshot:
        token = change_token(self.board)
        with self.lock:
            if self.current is None or self.current.token != token:
                self.current = Snapshot.load(self.board)
            return self.current


def board_view(
    board: Board,
    filters: Filters = Filters(),
    *,
    sort: str = "top1",
    descending: bool = True,
    objectives: str = DEFAULT_OBJECTIVES,
    missing: Missing = Missing.WORST,
    snapshot: "Snapshot | None" = None,
) -> BoardView:
    if sort not in SORT_FIELDS:
        raise BadInput(f"cannot sort by {sort!r}", field="sort")
    objs = parse_objectives(objectives, known=OBJECTIVE_COLUMNS)
    snap = snapshot or Snapshot.load(board)
    everything = snap.rows
    active = filters.active()
    rows = [r for r in everything if all(getattr(r, k) == v for k, v in active.items())] if active else list(everything)
    rows.sort(key=lambda r: (getattr(r, sort) is None, _sort_key(getattr(r, sort), descending)))
    frontiers = frontiers_by_class(rows, objs, missing=missing)
    return BoardView(
        filters=filters,
        sort=sort,
        descending=descending,
        objectives=objs,
        rows=tuple(rows),
        total=len(everything),
        frontiers=frontiers,
        evidence=snap.evidence,
        facets=snap.facets,
        sweeps=snap.sweeps,
    )


def _sort_key(v: Any, descending: bool) -> Any:
    if v is None:
        return 0
    if isinstance(v, (int, float)):
        return -v if descending else v
    return _Reversed(v) if descending else v


class _Reversed:
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: "_Reversed") -> bool:
        return other.v < self.v


# --- exports ----------------------------------------------------------------------


def csv_text(view: BoardView) -> str:
    buf = io.StringIO()
    cols = list(ROW_FIELDS) + ["pareto", "badges", "sweeps"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in view.rows:
        rec = view.record(r)
        rec["badges"] = ";".join(rec["badges"])
        rec["sweeps"] = ";".join(rec["sweeps"])
        w.writerow({k: ("" if v is None else v) for k, v in rec.items()})
    return buf.getvalue()


def api_json(view: BoardView) -> dict[str, Any]:
    return {
        "total": view.total,
        "count": len(view.rows),
        "filters": view.filters.active(),
        "sort": view.sort,
        "order": "desc" if view.descending else "asc",
        "objectives": [str(o) for o in view.objectives],
        "missing": view.frontier.missing.value,
        "frontier": list(view.frontier.front),
        "frontiers": {k: list(f.front) for k, f in view.frontiers.items()},
        "results": [view.record(r) for r in view.rows],
    }


# --- HTML ---------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.{digits}f}"
    return str(v)


@lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["ms"] = lambda v: _fmt(v * 1000.0 if v is not None else None, 2)
    env.filters["pct"] = lambda v: _fmt(v * 100.0 if v is not None else None, 1)
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
    return env


COLUMNS: tuple[tuple[str, str], ...] = (
    ("artifact", "artifact"),
    ("model", "model"),
    ("framework", "framework"),
    ("platform", "platform"),
    ("precision", "precision"),
    ("device", "device"),
    ("stage", "stage"),
    ("measurement", "class (mode/execution/driver)"),
    ("samples", "images"),
    ("top1", "top-1 (%)"),
    ("top5", "top-5 (%)"),
    ("latency_p90_s", "latency p90 (ms)"),
    ("multistream_p99_s", "MultiStream p99 (ms per query of 8)"),
    ("throughput_ips", "throughput (images/s)"),
    ("price_usd", "price (USD)"),
    ("power_w", "power (W)"),
    ("signer_role", "signed by"),
)


@dataclass(frozen=True)
class Paging:
    """One page of the table: 1-based ``page`` of ``pages``, rows ``first``..``last`` of ``count``."""

    page: int
    size: int
    count: int

    @classmethod
    def of(cls, count: int, page: int = 1, size: int = DEFAULT_PAGE_SIZE) -> "Paging":
        size = min(max(size, 1), MAX_PAGE_SIZE)
        pages = max(1, math.ceil(count / size))
        return cls(min(max(page, 1), pages), size, count)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.count / self.size))

    @property
    def first(self) -> int:
        return min((self.page - 1) * self.size + 1, self.count)

    @property
    def last(self) -> int:
        return min(self.page * self.size, self.count)

    def slice(self, rows: Sequence[ResultRow]) -> Sequence[ResultRow]:
        return rows[(self.page - 1) * self.size : self.page * self.size]


@dataclass(frozen=True)
class StaticFile:
    """A file the page loads from this app: content-hashed name, cached by browsers for good, gzipped once."""

    name: str
    media_type: str
    body: bytes

    @cached_property
    def gzipped(self) -> bytes:
        return gzip.compress(self.body, compresslevel=9, mtime=0)


STATIC = Path(__file__).with_name("static")
PLOTLY_JS = "plotly-gl2d-3.7.0.min.js"


@lru_cache(maxsize=1)
def plotly_js() -> StaticFile:
    """plotly.js as vendored from npm, checked against its pin (``static/vendored.json``) before it is ever served."""
    pin = json.loads((STATIC / "vendored.json").read_text())[PLOTLY_JS]
    body = (STATIC / PLOTLY_JS).read_bytes()
    got = hashlib.sha256(body).hexdigest()
    if got != pin["sha256"]:
        raise CheckFailed(f"{STATIC / PLOTLY_JS}: sha256 {got}, pinned {pin['sha256']} ({pin['npm']} {pin['version']})")
    # The name carries the content hash, so the browser may keep it for good.
    return StaticFile(f"plotly-gl2d-{got[:16]}.min.js", "text/javascript; charset=utf-8", body)


def render_index(view: BoardView, *, paging: Paging | None = None, query: str = "") -> str:
    paging = paging or Paging.of(len(view.rows))
    columns = {}
    plots = pareto_plots(view.rows, columns)
    data = plot_data(view.rows, plots, columns)
    table = [(r, view.on_frontier(r), [a for a in view.awards(r) if a.awarded], view.sweeps.get(r.bundle_digest, ()))
             for r in paging.slice(view.rows)]
    table_query = query + (f"{'&' if query else ''}page_size={paging.size}" if paging.size != DEFAULT_PAGE_SIZE else "")
    return templates().get_template("index.html").render(
        view=view,
        plots=plots,
        plot_json=script_json(data),
        plotly_src=f"static/{plotly_js().name}",
        results_href="results/sha256:",
        table=table,
        columns=COLUMNS,
        filter_fields=FILTER_FIELDS,
        paging=paging,
        query=query,
        table_query=table_query,
        tolerances=Tolerances(),
    )


def render_result(row: ResultRow, detail: dict[str, Any], awards: Sequence[Award]) -> str:
    return templates().get_template("result.html").render(row=row, detail=detail, awards=awards, tolerances=Tolerances())


# --- the app ------------------------------------------------------------------------


class _PageCache:
    """Rendered responses of the current snapshot, by query string: an unchanged board's front page is rendered once."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.items: dict[tuple[tuple[int, ...], str, str], bytes] = {}
        self.lock = threading.Lock()

    def get(self, key: tuple[tuple[int, ...], str, str], make: Any) -> bytes:
        with self.lock:
            hit = self.items.get(key)
        if hit is not None:
            return hit
        body = make()
        with self.lock:
            self.items = {k: v for k, v in self.items.items() if k[0] == key[0]}  # drop older snapshots
            if len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = body
        return body


def create_app(board_url: str) -> FastAPI:
    board = Board(board_url)
    snapshots = _SnapshotCache(board)
    pages = _PageCache()
    # ETags name the snapshot and this process: a restarted (maybe upgraded) server never answers 304 for an old page.
    instance = uuid.uuid4().hex[:8]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        board.close()

    app = FastAPI(title="request-pack scoreboard", docs_url="/api/docs", openapi_url="/api/openapi.json", lifespan=lifespan)
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=GZIP_LEVEL)

    def view_from(request: Request, sort: str, order: str, objectives: str, missing: str, snap: Snapshot | None = None) -> BoardView:
        filters = Filters(**{f: request.query_params.get(f, "") for f in FILTER_FIELDS})
        try:
            miss = Missing(missing)
        except ValueError:
            raise HTTPException(400, f"missing must be one of {[m.value for m in Missing]}") from None
        try:
            return board_view(board, filters, sort=sort, descending=(order != "asc"), objectives=objectives, missing=miss, snapshot=snap or snapshots.get())
        except BadInput as e:
            raise HTTPException(400, str(e)) from e

    def cached(request: Request, kind: str, media_type: str, make: Any, headers: dict[str, str] | None = None) -> Response:
        """Render once per snapshot and query; answer 304 when the browser already has this version."""
        snap = snapshots.get()
        query = str(request.query_params)
        etag = f'"{instance}-{"-".join(map(str, snap.token))}-{hashlib.sha256(f"{kind}?{query}".encode()).hexdigest()[:16]}"'
        # no-cache: the browser may keep the page but asks every time; the board changes when anyone publishes.
        common = {"ETag": etag, "Cache-Control": "no-cache", **(headers or {})}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=common)
        # Kept gzipped: a cached page is then sent without compressing it again (GZipMiddleware passes it through).
        body = pages.get((snap.token, kind, query), lambda: gzip.compress(make(snap), compresslevel=GZIP_LEVEL, mtime=0))
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(body, media_type=media_type, headers=common | {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(gzip.decompress(body), media_type=media_type, headers=common)

    @app.get("/", response_class=HTMLResponse)
    def index(
        request: Request,
        sort: str = "top1",
        order: str = "desc",
        objectives: str = DEFAULT_OBJECTIVES,
        missing: str = "worst",
        page: int = Query(1, ge=1),
        page_size: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    ) -> Response:
        def make(snap: Snapshot) -> bytes:
            view = view_from(request, sort, order, objectives, missing, snap)
            query = urlencode({k: v for k, v in request.query_params.items() if k not in ("sort", "order", "page", "page_size")})
            return render_index(view, paging=Paging.of(len(view.rows), page, page_size), query=query).encode()

        return cached(request, "index", "text/html; charset=utf-8", make)

    @app.get("/static/{name}")
    def static(name: str, request: Request) -> Response:
        asset = plotly_js()
        if name != asset.name:
            raise HTTPException(404, f"no static file {name}")
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            # Already compressed, once: GZipMiddleware passes a response with a Content-Encoding through.
            return Response(asset.gzipped, media_type=asset.media_type, headers=headers | {"Content-Encoding": "gzip"})
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    @app.get("/api/results")
    def api_results(request: Request, sort: str = "top1", order: str = "desc", objectives: str = DEFAULT_OBJECTIVES, missing: str = "worst") -> Response:
        return cached(request, "api", "application/json", lambda snap: json.dumps(api_json(view_from(request, sort, order, objectives, missing, snap)), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())

    @app.get("/api/pareto")
    def api_pareto(request: Request, objectives: str = DEFAULT_OBJECTIVES, missing: str = "worst") -> JSONResponse:
        view = view_from(request, "top1", "desc", objectives, missing)
        front = set(view.frontier.front)
        return JSONResponse(
            {
                "objectives": [str(o) for o in view.objectives],
                "missing": view.frontier.missing.value,
                "frontier": [view.record(r) for r in view.rows if r.bundle_digest in front],
                "frontiers": {k: list(f.front) for k, f in view.frontiers.items()},
                "excluded": list(view.frontier.excluded),
            }
        )

    @app.get("/results.csv")
    def results_csv(request: Request, sort: str = "top1", order: str = "desc", objectives: str = DEFAULT_OBJECTIVES, missing: str = "worst") -> Response:
        return cached(
            request, "csv", "text/csv; charset=utf-8",
            lambda snap: csv_text(view_from(request, sort, order, objectives, missing, snap)).encode(),
            headers={"Content-Disposition": "attachment; filename=results.csv"},
        )

    def _one(digest: str) -> tuple[ResultRow, dict[str, Any], tuple[Award, ...]]:
        found = board.get(digest)
        if found is None:
            raise HTTPException(404, f"no result {digest} on this board")
        row, detail = found
        return row, detail, snapshots.get().evidence.awards(row)

    @app.get("/api/results/{digest}")
    def api_result(digest: str) -> JSONResponse:
        row, detail, awards = _one(digest)
        return JSONResponse(row.to_json() | {"badges": [a.to_json() for a in awards], "detail": detail})

    @app.get("/results/{digest}", response_class=HTMLResponse)
    def result_page(digest: str) -> HTMLResponse:
        row, detail, awards = _one(digest)
        return HTMLResponse(render_result(row, detail, awards))

    @app.get("/badges/{digest}.svg")
    def badge_svg(digest: str) -> Response:
        row, _, awards = _one(digest)
        return Response(badges_svg(awards), media_type="image/svg+xml")

    add_sweep_routes(app, board, templates(), plotly_js().name)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "results": board.count()}

    return app


def badges_svg(awards: Sequence[Award]) -> str:
    """A flat strip of the awarded badges, for a README."""
    got = [a for a in awards if a.awarded]
    colors = {"Available": "#2e7d32", "Functional": "#1565c0", "Reusable": "#6a1b9a", "Results Reproduced": "#c62828"}
    x, parts = 0, []
    for a in got or [None]:
        label = a.badge.value if a else "no badges"
        w = 7 * len(label) + 16
        color = colors.get(label, "#757575")
        parts.append(
            f'<rect x="{x}" width="{w}" height="20" rx="3" fill="{color}"/>'
            f'<text x="{x + w / 2}" y="14" fill="#fff" font-family="Verdana,sans-serif" font-size="11" text-anchor="middle">{label}</text>'
        )
        x += w + 4
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(x - 4, 1)}" height="20" role="img">{"".join(parts)}</svg>'


def serve(board_url: str, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    app = create_app(board_url)
    log.info("serving %s on http://%s:%d/", board_url, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
