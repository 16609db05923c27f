"""The board's web site: results table, Pareto plots, a page per result, JSON API and CSV.

One view model (``BoardView``) feeds the HTML page, the JSON API and the CSV
export, so the table, the plots and the exports always show the same rows,
the same frontier and the same badges. Plotly's JavaScript is inlined from
the installed ``plotly`` package (``include_plotlyjs=True``): the page needs
no CDN and works on a machine without internet access.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from packager.errors import BadInput
from packager.scoreboard.badges import Award, Evidence, Tolerances
from packager.scoreboard.pareto import (
    Direction,
    Frontier,
    Missing,
    Objective,
    pareto_front_columns,
    parse_objectives,
)
from packager.scoreboard.store import (
    FILTER_FIELDS,
    OBJECTIVE_COLUMNS,
    ROW_FIELDS,
    SORT_FIELDS,
    Board,
    Filters,
    ResultRow,
)

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
DEFAULT_OBJECTIVES = "accuracy:max,latency:min,price:min,power:min"
# SVG scatter puts one DOM node per point; past this, WebGL keeps the page responsive.
WEBGL_THRESHOLD = 2000
DEFAULT_PAGE_SIZE = 500


@dataclass(frozen=True)
class Axis:
    objective: str
    direction: Direction
    title: str
    scale: float = 1.0  # display unit: latency is stored in seconds, shown in ms


@dataclass(frozen=True)
class PlotSpec:
    slug: str
    title: str
    x: Axis
    y: Axis


PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec("accuracy-latency", "Accuracy vs latency", Axis("latency", Direction.MIN, "latency p90 (ms)", 1000.0), Axis("accuracy", Direction.MAX, "top-1")),
    PlotSpec("throughput-price", "Throughput vs price", Axis("price", Direction.MIN, "platform price (USD)"), Axis("throughput", Direction.MAX, "throughput (images/s)")),
    PlotSpec("accuracy-power", "Accuracy vs power", Axis("power", Direction.MIN, "peak power (W)"), Axis("accuracy", Direction.MAX, "top-1")),
)


@dataclass(frozen=True)
class Plot:
    spec: PlotSpec
    figure: dict[str, Any]
    points: int
    frontier: int
    missing: int  # results without a value on one of the axes: not drawn, and said so


@dataclass(frozen=True)
class BoardView:
    filters: Filters
    sort: str
    descending: bool
    objectives: tuple[Objective, ...]
    rows: tuple[ResultRow, ...]
    total: int  # rows on the board, before filters
    frontier: Frontier
    evidence: Evidence
    facets: dict[str, list[str]]

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
        }


@dataclass(frozen=True)
class Snapshot:
    """Every row of the board with what is derived from all of them (badge evidence, filter menus).

    The web app keeps one and reloads it only when ``Board.change_token``
    moves, so a page view of an unchanged 10,000-result board costs one
    COUNT/MAX query instead of reading every row again.
    """

    token: tuple[int, int]
    rows: tuple[ResultRow, ...]
    evidence: Evidence
    facets: dict[str, list[str]]

    @classmethod
    def load(cls, board: Board) -> "Snapshot":
        token = board.change_token()
        rows = tuple(board.rows())
        facets = {f: sorted({getattr(r, f) for r in rows}) for f in FILTER_FIELDS}
        return cls(token, rows, Evidence(rows), facets)


class _SnapshotCache:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.current: Snapshot | None = None
        self.lock = threading.Lock()

    def get(self) -> Snapshot:
        token = self.board.change_token()
        with self.lock:
            if self.current is None or self.current.token != token:
                self.current = Snapshot.load(self.board)
            return self.current


def columns_of(rows: Sequence[ResultRow], objectives: Iterable[str]) -> dict[str, np.ndarray]:
    """Objective values column-wise (None → NaN), the form the frontier code wants."""
    return {name: np.array([getattr(r, OBJECTIVE_COLUMNS[name]) for r in rows], dtype=np.float64) for name in objectives}


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
    frontier = pareto_front_columns([r.bundle_digest for r in rows], columns_of(rows, [o.name for o in objs]), objs, missing=missing)
    return BoardView(
        filters=filters,
        sort=sort,
        descending=descending,
        objectives=objs,
        rows=tuple(rows),
        total=len(everything),
        frontier=frontier,
        evidence=snap.evidence,
        facets=snap.facets,
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


# --- plots --------------------------------------------------------------------------


def pareto_plots(rows: Sequence[ResultRow]) -> list[Plot]:
    return [_plot(spec, rows) for spec in PLOTS]


def _plot(spec: PlotSpec, rows: Sequence[ResultRow]) -> Plot:
    objs = (Objective(spec.x.objective, spec.x.direction), Objective(spec.y.objective, spec.y.direction))
    cols = columns_of(rows, [spec.x.objective, spec.y.objective])
    xs, ys = cols[spec.x.objective], cols[spec.y.objective]
    keep = np.flatnonzero(~(np.isnan(xs) | np.isnan(ys)))
    drawn = [(rows[i], {spec.x.objective: float(xs[i]), spec.y.objective: float(ys[i])}) for i in keep]
    front = set(
        pareto_front_columns(
            [rows[i].bundle_digest for i in keep], {spec.x.objective: xs[keep], spec.y.objective: ys[keep]}, objs
        ).front
    )
    kind = "scattergl" if len(drawn) > WEBGL_THRESHOLD else "scatter"

    def trace(name: str, members: list[tuple[ResultRow, dict[str, float]]], frontier: bool) -> dict[str, Any]:
        if frontier:
            members = sorted(members, key=lambda m: (m[1][spec.x.objective], m[1][spec.y.objective]))
        return {
            "type": kind,
            "name": name,
            "mode": "lines+markers" if frontier else "markers",
            "x": [m[1][spec.x.objective] * spec.x.scale for m in members],
            "y": [m[1][spec.y.objective] * spec.y.scale for m in members],
            "customdata": [m[0].bundle_digest for m in members],
            "text": [f"{m[0].artifact} · {m[0].platform} · {m[0].framework} {m[0].precision}" for m in members],
            "hovertemplate": "%{text}<br>" + f"{spec.x.title}: %{{x:.4g}}<br>{spec.y.title}: %{{y:.4g}}<extra>{name}</extra>",
            "marker": (
                {"symbol": "star", "size": 13, "color": "#d62728", "line": {"width": 1, "color": "#7f0000"}}
                if frontier
                else {"symbol": "circle", "size": 8, "color": "#1f77b4", "opacity": 0.65}
            ),
            "line": {"shape": "hv", "color": "#d62728", "dash": "dot"} if frontier else None,
        }

    others = [m for m in drawn if m[0].bundle_digest not in front]
    on_front = [m for m in drawn if m[0].bundle_digest in front]
    traces = [trace("results", others, False), trace("Pareto frontier", on_front, True)]
    for t in traces:
        if t["line"] is None:
            del t["line"]
    missing = len(rows) - len(drawn)
    subtitle = f"{len(drawn)} results, {len(on_front)} on the frontier" + (f"; {missing} without {_missing_axis(spec)} not drawn" if missing else "")
    figure = {
        "data": traces,
        "layout": {
            "title": {"text": f"{spec.title}<br><sup>{subtitle}</sup>"},
            "xaxis": {"title": {"text": f"{spec.x.title} ({spec.x.direction.value} is better)"}, "gridcolor": "#eee", "zeroline": False},
            "yaxis": {"title": {"text": f"{spec.y.title} ({spec.y.direction.value} is better)"}, "gridcolor": "#eee", "zeroline": False},
            "height": 420,
            "margin": {"l": 60, "r": 20, "t": 70, "b": 95},
            "legend": {"orientation": "h", "y": -0.32},
            # No named template: with validate=False plotly would not resolve one.
            "plot_bgcolor": "#fff",
            "hovermode": "closest",
        },
    }
    return Plot(spec, figure, len(drawn), len(on_front), missing)


def _missing_axis(spec: PlotSpec) -> str:
    return f"{spec.x.objective} or {spec.y.objective}"


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    import plotly.offline

    return plotly.offline.get_plotlyjs()


def plot_html(plot: Plot, *, include_plotlyjs: bool) -> str:
    """Plotly's own embedding, so its JSON escaping (``</script>`` in a name) is used as is."""
    import plotly.io as pio

    # Clicking a point opens that result's page.
    post = "document.getElementById('{plot_id}').on('plotly_click', function(d){ if (d.points.length) { window.location = 'results/' + d.points[0].customdata; } });"
    return pio.to_html(
        plot.figure,
        include_plotlyjs=include_plotlyjs,
        full_html=False,
        validate=False,
        div_id=f"plot-{plot.spec.slug}",
        post_script=post,
        config={"displaylogo": False, "responsive": True},
        default_height="420px",
    )


# --- exports ----------------------------------------------------------------------


def csv_text(view: BoardView) -> str:
    buf = io.StringIO()
    cols = list(ROW_FIELDS) + ["pareto", "badges"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in view.rows:
        rec = view.record(r)
        rec["badges"] = ";".join(rec["badges"])
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
    ("top1", "top-1"),
    ("top5", "top-5"),
    ("latency_p90_s", "latency p90 (ms)"),
    ("throughput_ips", "images/s"),
    ("price_usd", "price (USD)"),
    ("power_w", "power (W)"),
    ("signer_role", "signed by"),
)


def render_index(view: BoardView, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE, query: str = "") -> str:
    plots = pareto_plots(view.rows)
    html_plots = [plot_html(p, include_plotlyjs=(i == 0)) for i, p in enumerate(plots)]
    pages = max(1, math.ceil(len(view.rows) / page_size))
    page = min(max(page, 1), pages)
    shown = view.rows[(page - 1) * page_size : page * page_size]
    table = [(r, view.on_frontier(r), [a for a in view.awards(r) if a.awarded]) for r in shown]
    return templates().get_template("index.html").render(
        view=view,
        plots=list(zip(plots, html_plots)),
        table=table,
        columns=COLUMNS,
        filter_fields=FILTER_FIELDS,
        page=page,
        pages=pages,
        page_size=page_size,
        query=query,
        tolerances=Tolerances(),
    )


def render_result(row: ResultRow, detail: dict[str, Any], awards: Sequence[Award]) -> str:
    return templates().get_template("result.html").render(row=row, detail=detail, awards=awards, tolerances=Tolerances())


# --- the app ------------------------------------------------------------------------


def create_app(board_url: str) -> FastAPI:
    board = Board(board_url)
    snapshots = _SnapshotCache(board)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        board.close()

    app = FastAPI(title="request-pack scoreboard", docs_url="/api/docs", openapi_url="/api/openapi.json", lifespan=lifespan)

    def view_from(request: Request, sort: str, order: str, objectives: str, missing: str) -> BoardView:
        filters = Filters(**{f: request.query_params.get(f, "") for f in FILTER_FIELDS})
        try:
            miss = Missing(missing)
        except ValueError:
            raise HTTPException(400, f"missing must be one of {[m.value for m in Missing]}") from None
        try:
            return board_view(board, filters, sort=sort, descending=(order != "asc"), objectives=objectives, missing=miss, snapshot=snapshots.get())
        except BadInput as e:
            raise HTTPException(400, str(e)) from e

    @app.get("/", response_class=HTMLResponse)
    def index(
        request: Request,
        sort: str = "top1",
        order: str = "desc",
        objectives: str = DEFAULT_OBJECTIVES,
        missing: str = "worst",
        page: int = Query(1, ge=1),
    ) -> HTMLResponse:
        view = view_from(request, sort, order, objectives, missing)
        query = urlencode({k: v for k, v in request.query_params.items() if k not in ("sort", "order", "page")})
        return HTMLResponse(render_index(view, page=page, query=query))

    @app.get("/api/results")
    def api_results(request: Request, sort: str = "top1", order: str = "desc", objectives: str = DEFAULT_OBJECTIVES, missing: str = "worst") -> JSONResponse:
        return JSONResponse(api_json(view_from(request, sort, order, objectives, missing)))

    @app.get("/api/pareto")
    def api_pareto(request: Request, objectives: str = DEFAULT_OBJECTIVES, missing: str = "worst") -> JSONResponse:
        view = view_from(request, "top1", "desc", objectives, missing)
        front = set(view.frontier.front)
        return JSONResponse(
            {
                "objectives": [str(o) for o in view.objectives],
                "missing": view.frontier.missing.value,
                "frontier": [view.record(r) for r in view.rows if r.bundle_digest in front],
                "excluded": list(view.frontier.excluded),
            }
        )

    @app.get("/results.csv")
    def results_csv(request: Request, sort: str = "top1", order: str = "desc", objectives: str = DEFAULT_OBJECTIVES, missing: str = "worst") -> PlainTextResponse:
        view = view_from(request, sort, order, objectives, missing)
        return PlainTextResponse(csv_text(view), media_type="text/csv", headers={"Content-Disposition": "attachment; filename=results.csv"})

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
