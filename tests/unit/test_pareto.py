"""The Pareto frontier against the definition, checked pair by pair on seeded random points."""

from __future__ import annotations

import random

import pytest

from packager.errors import BadInput
from packager.scoreboard.pareto import (
    Direction,
    Missing,
    Objective,
    dominates,
    pareto_front,
    parse_objectives,
)

OBJS = parse_objectives("accuracy:max,latency:min,price:min,power:min")


def brute_force(points, objectives, missing=Missing.WORST):
    """O(n²) straight from the definition, sharing nothing with the implementation but `dominates`' meaning."""

    def good(v, o):
        if v is None:
            return float("-inf")
        return v if o.direction is Direction.MAX else -v

    if missing is Missing.EXCLUDE:
        points = [p for p in points if all(p[1].get(o.name) is not None for o in objectives)]
    out = []
    for k, a in points:
        ga = [good(a.get(o.name), o) for o in objectives]
        beaten = False
        for k2, b in points:
            gb = [good(b.get(o.name), o) for o in objectives]
            if all(x >= y for x, y in zip(gb, ga)) and any(x > y for x, y in zip(gb, ga)):
                beaten = True
                break
        if not beaten:
            out.append(k)
    return out


def random_points(rng: random.Random, n: int, *, grid: int, p_missing: float):
    """Values on a small grid so ties are frequent; some values missing."""
    pts = []
    for i in range(n):
        v = {}
        for name in ("accuracy", "latency", "price", "power"):
            v[name] = None if rng.random() < p_missing else rng.randrange(grid) / grid
        pts.append((f"r{i}", v))
    return pts


@pytest.mark.parametrize("seed", range(40))
def test_frontier_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([0, 1, 2, 5, 30, 120])
    grid = rng.choice([3, 10, 1000])
    pts = random_points(rng, n, grid=grid, p_missing=rng.choice([0.0, 0.1, 0.4]))
    k = rng.randint(1, 4)
    objs = OBJS[:k]
    for policy in Missing:
        got = pareto_front(pts, objs, missing=policy)
        assert list(got.front) == brute_force(pts, objs, policy), (seed, policy)
        if policy is Missing.EXCLUDE:
            assert set(got.excluded) == {key for key, v in pts if any(v[o.name] is None for o in objs)}


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
@pytest.mark.parametrize("grid", [2, 7, 10_000])
def test_larger_boards_per_dimension_match_brute_force(dims: int, grid: int) -> None:
    """Several blocks of the blocked algorithm, and the 2-D sweep with heavy ties and duplicates."""
    rng = random.Random(dims * 100 + grid)
    pts = random_points(rng, 700, grid=grid, p_missing=0.15)
    objs = OBJS[:dims]
    assert list(pareto_front(pts, objs).front) == brute_force(pts, objs)


def test_frontier_is_mutually_non_dominated_and_dominates_the_rest() -> None:
    rng = random.Random(1234)
    pts = random_points(rng, 300, grid=50, p_missing=0.2)
    f = pareto_front(pts, OBJS)
    values = dict(pts)
    front = set(f.front)
    for a in front:
        assert not any(dominates(values[b], values[a], OBJS) for b in front)
    for key, v in pts:
        if key not in front:
            assert any(dominates(values[b], v, OBJS) for b in front), key


def test_identical_points_are_all_on_the_frontier() -> None:
    p = {"accuracy": 0.7, "latency": 0.01}
    f = pareto_front([("a", p), ("b", dict(p)), ("c", {"accuracy": 0.6, "latency": 0.01})], OBJS[:2])
    assert f.front == ("a", "b")


def test_missing_power_counts_as_worst_not_as_best() -> None:
    objs = parse_objectives("accuracy:max,power:min")
    measured = ("measured", {"accuracy": 0.8, "power": 10.0})
    unmeasured = ("unmeasured", {"accuracy": 0.8, "power": None})
    better_unmeasured = ("better", {"accuracy": 0.9, "power": None})
    f = pareto_front([measured, unmeasured, better_unmeasured], objs)
    # Same accuracy, no reading: the measured one dominates; higher accuracy keeps `better` on the frontier.
    assert f.front == ("measured", "better")
    f = pareto_front([measured, unmeasured, better_unmeasured], objs, missing=Missing.EXCLUDE)
    assert f.front == ("measured",) and set(f.excluded) == {"unmeasured", "better"}


def test_nobody_measured_power_so_power_decides_nothing() -> None:
    pts = [("a", {"accuracy": 0.8, "latency": 0.02, "power": None}), ("b", {"accuracy": 0.7, "latency": 0.01, "power": None})]
    assert pareto_front(pts, parse_objectives("accuracy:max,latency:min,power:min")).front == ("a", "b")


def test_nan_is_missing() -> None:
    objs = parse_objectives("accuracy:max,power:min")
    f = pareto_front([("a", {"accuracy": 0.5, "power": float("nan")}), ("b", {"accuracy": 0.5, "power": 3.0})], objs)
    assert f.front == ("b",)


def test_direction_matters() -> None:
    pts = [("fast", {"latency": 0.01}), ("slow", {"latency": 0.1})]
    assert pareto_front(pts, [Objective("latency", Direction.MIN)]).front == ("fast",)
    assert pareto_front(pts, [Objective("latency", Direction.MAX)]).front == ("slow",)


def test_large_frontier_is_fast_enough() -> None:
    import time

    rng = random.Random(7)
    # Anti-correlated accuracy/latency: many points on the frontier, the hard case for the sweep.
    pts = []
    for i in range(10_000):
        a = rng.random()
        pts.append((i, {"accuracy": a, "latency": a + rng.random() * 0.05, "price": rng.random(), "power": None}))
    start = time.perf_counter()
    f = pareto_front(pts, OBJS)
    assert time.perf_counter() - start < 5.0
    assert len(f.front) > 50


@pytest.mark.parametrize(
    "text, message",
    [
        ("accuracy", "no direction"),
        ("accuracy:up", "direction must be"),
        ("acuracy:max", "did you mean 'accuracy'"),
        ("accuracy:max,accuracy:min", "given twice"),
        (" , ", "no objectives"),
    ],
)
def test_bad_objectives_are_refused(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_objectives(text, known=["accuracy", "latency"])


def test_parse_objectives_round_trip() -> None:
    objs = parse_objectives("accuracy:MAX, latency:min")
    assert [str(o) for o in objs] == ["accuracy:max", "latency:min"]
