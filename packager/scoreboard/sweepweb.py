"""The board's sweep pages: ``/sweeps`` (every sweep, filtered by parent artifact), ``/sweeps/{id}`` (one group:
its plots of top-1 against latency and throughput, one per measurement class, its parent, space, each point's
knobs and result, the frontier within each measurement class) and their JSON
(``/api/sweeps``, ``/api/sweeps/{id}``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse

from packager.errors import BadInput
from packager.scoreboard.plots import SWEEP_PLOTS, class_plots, plot_data, script_json
from packager.scoreboard.store import Board, objective_title
from packager.scoreboard.sweeps import (
    SWEEP_OBJECTIVES,
    Sweep,
    SweepSummary,
    dataset_note,
    list_sweeps,
    load_sweep,
)


def knob_columns(sweep: Sweep) -> list[str]:
    """The knobs any point sets, in first-seen order: one table column each."""
    seen: dict[str, None] = {}
    for p in sweep.points:
        seen.update(dict.fromkeys(p.knobs))
    return list(seen)


def render_sweeps(env: Any, sweeps: list[SweepSummary], artifact: str, artifacts: list[str]) -> str:
    return env.get_template("sweeps.html").render(sweeps=sweeps, artifact=artifact, artifacts=artifacts)


def render_sweep(env: Any, sweep: Sweep, *, dataset: str, plotly_src: str) -> str:
    """The sweep's page: its plots (each of SWEEP_PLOTS once per measurement class, the board's plot code),
    then its table of points and its space."""
    objectives = next(iter(sweep.frontiers.values())).objectives if sweep.frontiers else ()
    rows = [p.row for p in sweep.points if p.row is not None]
    columns: dict = {}
    plots = class_plots(rows, SWEEP_PLOTS, dataset=dataset, columns=columns)
    return env.get_template("sweep.html").render(
        sweep=sweep, knobs=knob_columns(sweep), dataset=dataset,
        objectives=[f"{objective_title(o.name)} {o.direction.value}" for o in objectives],
        plots=plots, plot_json=script_json(plot_data(rows, plots, columns)), plotly_src=plotly_src,
        results_href="../results/sha256:")


def add_sweep_routes(app: FastAPI, board: Board, env: Any, plotly_name: str) -> None:
    """Register the sweep pages and API on the board's app (``env``: its jinja environment; ``plotly_name``: the
    content-hashed name the app serves plotly.js under, in ``/static/``)."""

    def one(sweep_id: str, objectives: str) -> Sweep:
        try:
            sweep = load_sweep(board, sweep_id, objectives=objectives)
        except BadInput as e:
            raise HTTPException(400, str(e)) from e
        if sweep is None:
            raise HTTPException(404, f"no sweep {sweep_id} on this board")
        return sweep

    @app.get("/sweeps", response_class=HTMLResponse)
    def sweeps_page(artifact: str = "") -> HTMLResponse:
        every = list_sweeps(board)
        shown = [s for s in every if not artifact or s.artifact == artifact]
        return HTMLResponse(render_sweeps(env, shown, artifact, sorted({s.artifact for s in every})))

    @app.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
    def sweep_page(sweep_id: str, objectives: str = SWEEP_OBJECTIVES) -> HTMLResponse:
        sweep = one(sweep_id, objectives)
        return HTMLResponse(render_sweep(env, sweep, dataset=dataset_note(board, sweep),
                                         plotly_src=f"../static/{plotly_name}"))

    @app.get("/api/sweeps")
    def api_sweeps(artifact: str = "") -> JSONResponse:
        return JSONResponse([s.__dict__ for s in list_sweeps(board, artifact=artifact)])

    @app.get("/api/sweeps/{sweep_id}")
    def api_sweep(sweep_id: str, objectives: str = SWEEP_OBJECTIVES) -> JSONResponse:
        sweep = one(sweep_id, objectives)
        return JSONResponse(sweep.to_json() | {"dataset": dataset_note(board, sweep)})
