"""Multi-objective Pareto frontier: which results no other result beats on every objective.

Pure: no database, no web. Points are ``(key, {objective: value | None})``.

Missing values (a board with no power probe reports ``power: null``) are an
explicit policy, never a silent NaN comparison:

- ``Missing.WORST`` (default): a missing value is worse than any reported
  one, and two missing values tie. A result without a power reading can still
  be on the frontier through its other objectives, but never wins *on power*;
  when nobody measured power, power decides nothing.
- ``Missing.EXCLUDE``: a result missing any objective takes no part; it is
  returned in ``Frontier.excluded`` so the caller can say so.

Domination: ``a`` dominates ``b`` when ``a`` is at least as good on every
objective and strictly better on one. Identical points do not dominate each
other, so ties are all on the frontier.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from packager.errors import BadInput


class Direction(str, enum.Enum):
    MAX = "max"
    MIN = "min"


class Missing(str, enum.Enum):
    WORST = "worst"
    EXCLUDE = "exclude"


@dataclass(frozen=True)
class Objective:
    name: str
    direction: Direction

    def __str__(self) -> str:
        return f"{self.name}:{self.direction.value}"


@dataclass(frozen=True)
class Frontier:
    """Keys on the frontier (in input order), keys left out for missing values, and the objectives used."""

    objectives: tuple[Objective, ...]
    front: tuple[Hashable, ...]
    excluded: tuple[Hashable, ...]
    missing: Missing

    def __contains__(self, key: object) -> bool:
        return key in set(self.front)


def parse_objectives(text: str, *, known: Iterable[str] | None = None) -> tuple[Objective, ...]:
    """``"accuracy:max,latency:min"`` → objectives; a bare name is refused (the direction matters)."""
    known_set = set(known) if known is not None else None
    out: list[Objective] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, direction = part.partition(":")
        name = name.strip()
        if not sep:
            raise BadInput(f"objective {part!r} has no direction: write {part}:max or {part}:min", field="--objectives")
        try:
            d = Direction(direction.strip().lower())
        except ValueError:
            raise BadInput(f"objective {part!r}: direction must be 'max' or 'min'", field="--objectives") from None
        if known_set is not None and name not in known_set:
            import difflib

            close = difflib.get_close_matches(name, sorted(known_set), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadInput(f"unknown objective {name!r}{hint}; known: {', '.join(sorted(known_set))}", field="--objectives")
        if any(o.name == name for o in out):
            raise BadInput(f"objective {name!r} given twice", field="--objectives")
        out.append(Objective(name, d))
    if not out:
        raise BadInput("no objectives given", field="--objectives")
    return tuple(out)


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _column(values: Sequence[float | None]) -> np.ndarray:
    """Floats with None → NaN, in one pass (numpy does the conversion in C)."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def goodness_matrix(columns: Mapping[str, Sequence[float | None] | np.ndarray], objectives: Sequence[Objective]) -> np.ndarray:
    """Matrix where larger is better in every column; missing (None/NaN) → -inf, the worst, which ties with itself."""
    cols = []
    for o in objectives:
        raw = columns[o.name]
        c = raw.astype(np.float64, copy=True) if isinstance(raw, np.ndarray) else _column(raw)
        if o.direction is Direction.MIN:
            c = -c
        c[np.isnan(c)] = -np.inf
        cols.append(c)
    if not cols:
        return np.empty((0, 0))
    return np.stack(cols, axis=1)


def _goodness(points: Sequence[tuple[Hashable, Mapping[str, float | None]]], objectives: Sequence[Objective]) -> np.ndarray:
    columns = {o.name: [p[1].get(o.name) for p in points] for o in objectives}
    if not points:
        return np.empty((0, len(objectives)))
    return goodness_matrix(columns, objectives)


_BLOCK = 256


def _dominated_by(candidates: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each candidate row: is some row of ``others`` >= everywhere and > somewhere?"""
    if others.shape[0] == 0 or candidates.shape[0] == 0:
        return np.zeros(candidates.shape[0], dtype=bool)
    ge = np.all(others[None, :, :] >= candidates[:, None, :], axis=2)
    gt = np.any(others[None, :, :] > candidates[:, None, :], axis=2)
    return np.any(ge & gt, axis=1)


def frontier_mask(goodness: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a larger-is-better matrix.

    Rows are taken in descending lexicographic order, in blocks: a dominating
    row is componentwise >= with one strict >, so it is never later than the
    rows it dominates. A row of a block is dominated iff a frontier row of the
    earlier blocks or any row of its own block dominates it (a dominated
    dominator is itself dominated by an earlier frontier row: transitivity).
    Work is O(n·(|front| + block)) numpy element operations, in a few dozen
    vectorised calls instead of one per row.
    """
    n = goodness.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    if goodness.shape[1] == 2:
        return _frontier_mask_2d(goodness)
    order = np.lexsort(tuple(-goodness[:, j] for j in reversed(range(goodness.shape[1]))))
    front = np.empty((0, goodness.shape[1]))
    for start in range(0, n, _BLOCK):
        idx = order[start : start + _BLOCK]
        block = goodness[idx]
        keep = ~_dominated_by(block, front)
        block, idx = block[keep], idx[keep]
        keep = ~_dominated_by(block, block)
        mask[idx[keep]] = True
        front = np.concatenate([front, block[keep]])
    return mask


def _frontier_mask_2d(goodness: np.ndarray) -> np.ndarray:
    """Two objectives (every plot): one sort and a running maximum, O(n log n) even when all rows are on the frontier.

    Identical points are merged first, so among distinct points sorted by x
    then y (both descending) a point is dominated iff an earlier one has
    y >= its y: that one has x >= its x and differs from it.
    """
    unique, inverse = np.unique(goodness, axis=0, return_inverse=True)
    order = np.lexsort((-unique[:, 1], -unique[:, 0]))
    y = unique[order, 1]
    best_before = np.maximum.accumulate(y)
    dominated = np.zeros(len(y), dtype=bool)
    dominated[1:] = best_before[:-1] >= y[1:]
    keep_unique = np.zeros(len(unique), dtype=bool)
    keep_unique[order[~dominated]] = True
    return keep_unique[inverse.reshape(-1)]


def pareto_front_columns(
    keys: Sequence[Hashable],
    columns: Mapping[str, Sequence[float | None] | np.ndarray],
    objectives: Sequence[Objective],
    *,
    missing: Missing = Missing.WORST,
) -> Frontier:
    """Same as ``pareto_front`` for data held column-wise (a board's 10,000 rows)."""
    objectives = tuple(objectives)
    if not objectives:
        raise BadInput("no objectives given", field="--objectives")
    g = goodness_matrix(columns, objectives) if len(keys) else np.empty((0, len(objectives)))
    excluded: tuple[Hashable, ...] = ()
    eligible = np.ones(len(keys), dtype=bool)
    if missing is Missing.EXCLUDE and len(keys):
        eligible = ~np.any(np.isneginf(g), axis=1)
        excluded = tuple(k for k, ok in zip(keys, eligible) if not ok)
    sub = np.flatnonzero(eligible)
    mask = frontier_mask(g[sub]) if len(sub) else np.zeros(0, dtype=bool)
    front = tuple(keys[i] for i in sub[mask])
    return Frontier(objectives=objectives, front=front, excluded=excluded, missing=missing)


def pareto_front(
    points: Sequence[tuple[Hashable, Mapping[str, float | None]]],
    objectives: Sequence[Objective],
    *,
    missing: Missing = Missing.WORST,
) -> Frontier:
    columns = {o.name: [p[1].get(o.name) for p in points] for o in objectives}
    return pareto_front_columns([p[0] for p in points], columns, objectives, missing=missing)


def dominates(a: Mapping[str, float | None], b: Mapping[str, float | None], objectives: Sequence[Objective]) -> bool:
    """The definition, one pair at a time (used by the brute-force check and for explanations)."""
    g = _goodness([(0, a), (1, b)], objectives)
    return bool(np.all(g[0] >= g[1]) and np.any(g[0] > g[1]))
