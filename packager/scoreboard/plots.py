"""The board's Pareto plots as compact data: one block of columns the page turns into plotly traces.

The page used to embed one full plotly figure per plot: every point carried its
digest, a hover string and marker settings, three times over, and plotly.js
itself was inlined (9.4 MB for 10,000 results; Chromium took 5 s to load it).
Now the server sends each column once, in display units, with the hover labels
as indices into a short list of distinct strings, and each plot as the indices
of its frontier (computed here, at full precision, with ``pareto.py``). The
page's script (``templates/index.html``) builds the traces; a plot with more
than ``WEBGL_THRESHOLD`` points draws them with ``scattergl`` (WebGL), because
SVG puts one DOM node per point.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from packager.scoreboard.pareto import Direction, Objective, pareto_front_columns
from packager.scoreboard.store import OBJECTIVE_COLUMNS, OBJECTIVE_UNITS, ResultRow, Unit

# SVG scatter puts one DOM node per point; past this, WebGL keeps the page responsive.
WEBGL_THRESHOLD = 2000
# Plotted values keep 6 significant digits: the hover shows 4, and the frontier is
# computed from the stored values, not from these.
PLOT_DIGITS = 6


@dataclass(frozen=True)
class Axis:
    objective: str
    direction: Direction
    name: str

    @property
    def unit(self) -> Unit:
        return OBJECTIVE_UNITS[self.objective]  # the one table of units: stored SI, shown as scale × value

    @property
    def title(self) -> str:
        return f"{self.name} ({self.unit.label})"

    @property
    def scale(self) -> float:
        return self.unit.scale


@dataclass(frozen=True)
class PlotSpec:
    slug: str
    title: str
    x: Axis
    y: Axis


ACCURACY_LATENCY = PlotSpec("accuracy-latency", "Accuracy vs latency", Axis("latency", Direction.MIN, "latency p90"),
                            Axis("accuracy", Direction.MAX, "top-1"))
PLOTS: tuple[PlotSpec, ...] = (
    ACCURACY_LATENCY,
    PlotSpec("throughput-price", "Throughput vs price", Axis("price", Direction.MIN, "platform price"), Axis("throughput", Direction.MAX, "throughput")),
    PlotSpec("accuracy-power", "Accuracy vs power", Axis("power", Direction.MIN, "peak power"), Axis("accuracy", Direction.MAX, "top-1")),
    # Its own plot: a query's latency (8 images) never shares an axis with SingleStream's one-image latency.
    PlotSpec("accuracy-multistream", "Accuracy vs MultiStream latency",
             Axis("multistream", Direction.MIN, "MultiStream p99 per query"), Axis("accuracy", Direction.MAX, "top-1")),
)
# A sweep's plots (its page draws each once per measurement class): what a co-design user trades top-1 against.
SWEEP_PLOTS: tuple[PlotSpec, ...] = (
    ACCURACY_LATENCY,
    PlotSpec("accuracy-throughput", "Accuracy vs throughput", Axis("throughput", Direction.MAX, "throughput"),
             Axis("accuracy", Direction.MAX, "top-1")),
)
# What produced each objective's figure, for axis titles: the board's latency and throughput columns.
SCENARIOS = {"latency": "SingleStream, one image per query", "throughput": "Offline, best rate over its batch sizes",
             "multistream": "MultiStream, 8 images per query, 99th percentile of a query's latency"}
DRIVERS = {"loadgen": "LoadGen", "builtin": "built-in loop"}
DATASET_CHARS = 108  # at most three lines of a data set's note on an axis; the page's text gives it whole


@dataclass(frozen=True)
class Plot:
    spec: PlotSpec
    points: int  # results drawn (both values present)
    missing: int  # results without a value on one of the axes: not drawn, and said so
    # Per measurement class (index into the classes), the row indices on that class's frontier in drawing
    # order (x, then y). One frontier per class: numbers of different classes are never compared.
    fronts: tuple[tuple[int, tuple[int, ...]], ...]
    # A plot of one measurement class (a sweep's page draws one per class): its index and name, and the
    # data set its top-1 is over; None/"" on the main page's plots of every class.
    only: int | None = None
    measurement: str = ""
    dataset: str = ""

    @property
    def slug(self) -> str:
        return self.spec.slug if self.only is None else f"{self.spec.slug}-{self.only}"

    @property
    def title(self) -> str:
        return self.spec.title if self.only is None else f"{self.spec.title} · {self.measurement}"

    @property
    def front(self) -> tuple[int, ...]:
        return tuple(i for _, f in self.fronts for i in f)

    @property
    def frontier(self) -> int:
        return len(self.front)

    @property
    def webgl(self) -> bool:
        return self.points > WEBGL_THRESHOLD

    def subtitle(self) -> str:
        classes = len(self.fronts)
        s = f"{self.points} results, {self.frontier} on " + ("the frontier" if classes <= 1 else f"the frontiers of their {classes} measurement classes")
        if self.missing:
            s += f"; {self.missing} without {self.spec.x.objective} or {self.spec.y.objective} not drawn"
        return s


def column(rows: Sequence[ResultRow], objective: str) -> np.ndarray:
    """One objective's values (None → NaN), the form the frontier code wants."""
    attr = OBJECTIVE_COLUMNS[objective]
    return np.fromiter((np.nan if (v := getattr(r, attr)) is None else v for r in rows), dtype=np.float64, count=len(rows))


def classes_of(rows: Sequence[ResultRow]) -> tuple[list[str], np.ndarray]:
    """The measurement classes present (sorted) and each row's index into them."""
    names = sorted({r.measurement or "unknown" for r in rows})
    index = {n: i for i, n in enumerate(names)}
    return names, np.fromiter((index[r.measurement or "unknown"] for r in rows), dtype=np.int32, count=len(rows))


def _read_columns(rows: Sequence[ResultRow], specs: Sequence[PlotSpec], columns: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    cols = columns if columns is not None else {}
    for spec in specs:
        for axis in (spec.x, spec.y):
            if axis.objective not in cols:
                cols[axis.objective] = column(rows, axis.objective)
    return cols


def pareto_plots(rows: Sequence[ResultRow], columns: dict[str, np.ndarray] | None = None) -> list[Plot]:
    """The plots over ``rows``; ``columns`` caches the objective columns read (pass it on to ``plot_data``)."""
    cols = _read_columns(rows, PLOTS, columns)
    _, cls = classes_of(rows)
    return [_plot(spec, cols[spec.x.objective], cols[spec.y.objective], cls) for spec in PLOTS]


def class_plots(rows: Sequence[ResultRow], specs: Sequence[PlotSpec], *, dataset: str = "",
                columns: dict[str, np.ndarray] | None = None) -> list[Plot]:
    """Each spec once per measurement class, over that class's rows only: a plot never mixes classes.
    ``dataset``: what the rows' top-1 is over (one data set, as in a sweep), for the accuracy axis."""
    cols = _read_columns(rows, specs, columns)
    names, cls = classes_of(rows)
    return [replace(_plot(spec, cols[spec.x.objective], cols[spec.y.objective], cls, only=c), measurement=name,
                    dataset=dataset)
            for c, name in enumerate(names) for spec in specs]


def _plot(spec: PlotSpec, xs: np.ndarray, ys: np.ndarray, cls: np.ndarray, only: int | None = None) -> Plot:
    drawn = ~(np.isnan(xs) | np.isnan(ys))
    if only is not None:
        drawn &= cls == only
        xs, ys = np.where(drawn, xs, np.nan), np.where(drawn, ys, np.nan)
    objs = (Objective(spec.x.objective, spec.x.direction), Objective(spec.y.objective, spec.y.direction))
    fronts = []
    for c in np.unique(cls[drawn]).tolist():
        keep = np.flatnonzero(drawn & (cls == c))
        front = pareto_front_columns(keep.tolist(), {spec.x.objective: xs[keep], spec.y.objective: ys[keep]}, objs).front
        fronts.append((int(c), tuple(int(i) for i in sorted(front, key=lambda i: (xs[i], ys[i])))))  # type: ignore[index]
    missing = int((~drawn).sum()) if only is None else int(((cls == only) & ~drawn).sum())
    return Plot(spec, int(drawn.sum()), missing, tuple(fronts), only=only)


def _rounded(values: np.ndarray, scale: float) -> list[float | None]:
    """``values * scale`` to ``PLOT_DIGITS`` significant digits, None for NaN.

    Vectorised: round(v * 10**n) / 10**n with an exact power of ten gives the double
    nearest the decimal, whose JSON form is then the short decimal itself.
    """
    v = values * scale
    finite = np.isfinite(v) & (v != 0)
    n = np.zeros(len(v))
    n[finite] = PLOT_DIGITS - 1 - np.floor(np.log10(np.abs(v[finite])))
    n = np.clip(n, -15, 15)
    p = 10.0 ** np.abs(n)
    out = np.where(n >= 0, np.round(v * p) / p, np.round(v / p) * p)
    return [None if math.isnan(x) else x for x in out.tolist()]


def plot_data(rows: Sequence[ResultRow], plots: Sequence[Plot], columns: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """What the page's script needs to draw ``plots``, and nothing else."""
    cols = columns or {}
    labels: dict[str, int] = {}
    label_of = [
        labels.setdefault(f"{r.artifact} · {r.platform} · {r.framework} {r.precision}", len(labels)) for r in rows
    ]
    classes, cls = classes_of(rows)
    values: dict[str, list[float | None]] = {}
    for p in plots:
        for axis in (p.spec.x, p.spec.y):
            key = f"{axis.objective}*{axis.scale:g}"
            if key not in values:
                values[key] = _rounded(cols[axis.objective] if axis.objective in cols else column(rows, axis.objective), axis.scale)
    return {
        # Digests without the common "sha256:" prefix: a click opens results/sha256:<hex>.
        "digests": [r.bundle_digest.removeprefix("sha256:") for r in rows],
        "labels": list(labels),
        "label": label_of,
        "values": values,
        "classes": classes,
        "cls": cls.tolist(),
        "plots": [
            {
                "slug": p.slug,
                "title": html.escape(p.title),
                "subtitle": p.subtitle(),
                "webgl": p.webgl,
                "cls": p.only,
                "x": _axis_json(p.spec.x, p),
                "y": _axis_json(p.spec.y, p),
                "fronts": [[c, list(f)] for c, f in p.fronts],
            }
            for p in plots
        ],
    }


def _axis_json(axis: Axis, plot: Plot) -> dict[str, str]:
    """An axis's hover label and title; a plot of one class says what produced the figure: the scenario, the data
    set, the mode, native or emulated, and the driver (escaped: plotly reads tags in titles, names are strangers')."""
    title = f"{axis.title}, {axis.direction.value} is better"
    if plot.only is not None and axis.objective in SCENARIOS:
        title += f"<br>{html.escape(SCENARIOS[axis.objective])}; {html.escape(describe_class(plot.measurement))}"
    elif plot.only is not None:
        # The vertical axis: the data set, in short lines (a rotated title longer than the plot is cut off).
        what = f"on {plot.dataset[:DATASET_CHARS]}" if plot.dataset else "on an unnamed data set"
        title += "".join(f"<br>{html.escape(line)}" for line in textwrap.wrap(what, 36))
    return {"values": f"{axis.objective}*{axis.scale:g}", "label": axis.title, "title": title}


def describe_class(measurement: str) -> str:
    """``quick/native/loadgen`` → ``quick mode, native, LoadGen``: a measurement class in words."""
    parts = measurement.split("/")
    if len(parts) != 3:
        return f"class {measurement or 'unknown'}"
    mode, execution, driver = parts
    return f"{mode} mode, {execution}, {DRIVERS.get(driver, driver)}"


def script_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``</script>``, no ``<!--`` from a hostile name."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
