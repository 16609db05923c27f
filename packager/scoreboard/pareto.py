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

from ..errors import BadInput


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


def _goodness(points: Sequence[tuple[Hashable, Mapping[str, float | None]]], objectives: Sequence[Objective]) -> np.ndarray:
    """Matrix where larger is better in every column; missing → -inf (the worst, and ties with itself)."""
    g = np.empty((len(points), len(objectives)), dtype=np.float64)
    for i, (_, values) in enumerate(points):
        for j, o in enumerate(objectives):
            v = values.get(o.name)
            if _is_missing(v):
                g[i, j] = -np.inf
            else:
                fv = float(v)  # type: ignore[arg-type]
                g[i, j] = fv if o.direction is Direction.MAX else -fv
    return g


def frontier_mask(goodness: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a larger-is-better matrix.

    Rows are visited in descending lexicographic order: a dominating row is
    componentwise >= with one strict >, so it always comes strictly earlier.
    A dominated row's dominator is either on the frontier or dominated by a
    frontier row (transitivity), so comparing each row with the frontier so
    far is enough: O(n·|front|) numpy work instead of O(n²).
    """
    n = goodness.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort(tuple(-goodness[:, j] for j in reversed(range(goodness.shape[1]))))
    front_rows = np.empty_like(goodness)
    k = 0
    for i in order:
        row = goodness[i]
        if k:
            f = front_rows[:k]
            if np.any(np.all(f >= row, axis=1) & np.any(f > row, axis=1)):
                continue
        front_rows[k] = row
        k += 1
        mask[i] = True
    return mask


def pareto_front(
    points: Sequence[tuple[Hashable, Mapping[str, float | None]]],
    objectives: Sequence[Objective],
    *,
    missing: Missing = Missing.WORST,
) -> Frontier:
    objectives = tuple(objectives)
    if not objectives:
        raise BadInput("no objectives given", field="--objectives")
    if missing is Missing.EXCLUDE:
        keep = [p for p in points if not any(_is_missing(p[1].get(o.name)) for o in objectives)]
        excluded = tuple(p[0] for p in points if any(_is_missing(p[1].get(o.name)) for o in objectives))
    else:
        keep = list(points)
        excluded = ()
    mask = frontier_mask(_goodness(keep, objectives))
    front = tuple(keep[i][0] for i in range(len(keep)) if mask[i])
    return Frontier(objectives=objectives, front=front, excluded=excluded, missing=missing)


def dominates(a: Mapping[str, float | None], b: Mapping[str, float | None], objectives: Sequence[Objective]) -> bool:
    """The definition, one pair at a time (used by the brute-force check and for explanations)."""
    g = _goodness([(0, a), (1, b)], objectives)
    return bool(np.all(g[0] >= g[1]) and np.any(g[0] > g[1]))


def staircase(xy: Sequence[tuple[float, float]], x_dir: Direction, y_dir: Direction) -> list[tuple[float, float]]:
    """Frontier points of a 2-D plot in drawing order (by x, best-x last) for a step line."""
    return sorted(xy, key=lambda p: p[0], reverse=x_dir is Direction.MAX)
