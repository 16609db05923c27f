"""MultiStream's per-query latencies: LoadGen's own records, kept small, and its statistics recomputed from them.

LoadGen measures a MultiStream query from its scheduled issue to the completion of
its last sample (``loadgen.cc``: ``scheduled_time`` to ``all_samples_done_time``),
and reports their percentiles, mean and early-stopping estimate in
``mlperf_log_detail.txt``; the latencies themselves are only in its trace
(``mlperf_log_trace.json``: one ``Sample`` event per sample with ``query_seq`` and
``complete_ns``, counted from the query's scheduled time). The harness turns the
trace into ``queries.tsv`` (one line per query: sequence number, latency in ns),
which stays in the outputs and the signed bundle, and the trace itself is emptied:
it holds every tracer event of the run (about 335 bytes per sample: tens of MB for a
600 s run, over the bundle's JSON cap) and nothing the figures need beyond this. LoadGen writes
the trace on its I/O thread: tiny net, batch 8, 662 queries, 4 interleaved rounds at load 7 here
gave p50 per query 20.0 ms with it and 21.1 ms without (on/off 0.81-1.04), no cost beyond the noise.

``stats`` recomputes what LoadGen logs, with LoadGen's arithmetic (results.cc:
sorted latencies, ``latencies[int(n * p)]``, an integer mean; early_stopping.cc:
the binomial bound with tolerance 0 and confidence 0.99), so the harness can check
its extraction against LoadGen's detail log and ``verify`` can recompute a signed
claim from the records, exactly, in integer nanoseconds. Core and stdlib-only: the
harness (in the image) and the verifier (outside) share it.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

QUERIES_NAME = "queries.tsv"
HEADER = "# query_seq\tlatency_ns  (LoadGen MultiStream: scheduled issue to the query's last sample completed)"
MAX_QUERIES = 2_000_000  # a 600 s run at 0.3 ms per query; bounds what verify reads
MAX_LINE = 64
# LoadGen's per-query percentiles in the detail log (results.cc latency_percentiles), by their key's spelling.
PERCENTILES = {"50.00": 0.5, "90.00": 0.9, "95.00": 0.95, "97.00": 0.97, "99.00": 0.99, "99.90": 0.999}
EARLY_STOPPING_PERCENTILE = 0.99  # mlperf.conf: *.MultiStream.target_latency_percentile = 99
_CONFIDENCE = 0.99  # results.cc EarlyStopping
_TOLERANCE = 0.0


class QueryLogError(ValueError):
    """The per-query records are missing, malformed or too large; the message names the file and line."""


# --- from LoadGen's trace, to queries.tsv ---------------------------------------------------


def from_trace(trace: Path) -> list[int]:
    """Per-query latencies (ns) in query order: the latest ``complete_ns`` among each query's samples.

    Read line by line (the trace is one event per line); only ``Sample`` begin events are decoded."""
    latest: dict[int, int] = {}
    with Path(trace).open("r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if '"name":"Sample"' not in line or '"ph":"b"' not in line:
                continue
            try:
                args = json.loads(line.rstrip().rstrip(","))["args"]
                seq, done = int(args["query_seq"]), int(args["complete_ns"])
            except (ValueError, KeyError, TypeError):
                raise QueryLogError(f"{trace}:{number}: a Sample event without query_seq and complete_ns") from None
            if done > latest.get(seq, -1):
                latest[seq] = done
    if sorted(latest) != list(range(len(latest))):
        raise QueryLogError(f"{trace}: query sequence numbers are not 0..{len(latest) - 1}")
    return [latest[q] for q in range(len(latest))]


def write(path: Path, latencies_ns: Sequence[int]) -> None:
    Path(path).write_text(HEADER + "\n" + "".join(f"{q}\t{lat}\n" for q, lat in enumerate(latencies_ns)), encoding="utf-8")


def read(path: Path) -> list[int]:
    """The latencies of a queries.tsv, bounded before reading: a regular file, at most MAX_QUERIES short lines."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise QueryLogError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise QueryLogError(f"{path}: not a regular file")
    if st.st_size > (MAX_QUERIES + 1) * MAX_LINE:
        raise QueryLogError(f"{path}: {st.st_size} bytes, over the cap for {MAX_QUERIES} queries")
    out: list[int] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.rstrip(b"\n") == HEADER.encode():
                continue
            if len(out) >= MAX_QUERIES:  # short lines fit more than MAX_QUERIES in the size cap
                raise QueryLogError(f"{path}: more than {MAX_QUERIES} queries")
            if len(raw) > MAX_LINE:
                raise QueryLogError(f"{path}:{number}: line longer than {MAX_LINE} bytes")
            line = raw.decode("ascii", "replace").rstrip("\n")
            parts = line.split("\t")
            if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) != len(out):
                raise QueryLogError(f"{path}:{number}: not '<query_seq>\\t<latency_ns>' in sequence")
            out.append(int(parts[1]))
    if not out:
        raise QueryLogError(f"{path}: no queries")
    return out


# --- LoadGen's statistics ----------------------------------------------------------------


def stats(latencies_ns: Iterable[int]) -> dict[str, int | bool]:
    """The per-query figures LoadGen's detail log reports, under its keys, recomputed with its arithmetic."""
    lat = sorted(int(x) for x in latencies_ns)
    n = len(lat)
    if not n:
        raise QueryLogError("no queries")
    out: dict[str, int | bool] = {
        "result_query_count": n,
        "result_min_query_latency_ns": lat[0],
        "result_max_query_latency_ns": lat[-1],
        "result_mean_query_latency_ns": sum(lat) // n,
    }
    for name, p in PERCENTILES.items():
        out[f"result_{name}_percentile_per_query_latency_ns"] = lat[int(n * p)]
    t = early_stopping_discard(n, EARLY_STOPPING_PERCENTILE)
    out["early_stopping_met"] = t is not None
    out["early_stopping_latency_ms"] = lat[n - t] if t is not None else 0
    return out


def differences(latencies_ns: Iterable[int], detail: dict) -> dict[str, tuple[object, object]]:
    """Each figure the records give that LoadGen's detail log does not: {key: (recomputed, logged)}."""
    return {k: (v, detail.get(k)) for k, v in stats(latencies_ns).items() if detail.get(k) != v}


def early_stopping_discard(queries: int, percentile: float) -> int | None:
    """LoadGen's ``t`` for MultiStream (results.cc EarlyStopping): the estimate is ``sorted[queries - t]``.

    None when fewer queries ran than early stopping needs (662 at the 99th percentile)."""
    find = _MinPassing()
    p, d, c = percentile, _TOLERANCE, _CONFIDENCE
    h_min = find(1, p, d, c)
    if queries < h_min + 1:
        return None
    t = 1
    for i in range(2, queries + 1):
        if queries < find(i, p, d, c) + i:
            t = i - 1
            break
    return t


def _lbeta(x: int, y: int) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def _hypergeometric_2f1_a1(b: int, c: int, x: float) -> float:
    tolerance = 1.0 / (1 << 33)
    term = result = 1.0
    i = 0
    while abs(term) > tolerance:
        term *= (b + i) * x / (c + i)
        result += term
        i += 1
    return result


def _odds(h: int, t: int, p: float, d: float) -> float:
    """BetaRegularized[p - d, h, 1 + t]: the odds of t or fewer over-latency queries in h + t."""
    x, a, b = p - d, h, 1 + t
    return math.exp(a * math.log(x) + (b - 1) * math.log(1 - x) - _lbeta(a, b)) / a \
        * _hypergeometric_2f1_a1(1 - b, 1 + a, x / (x - 1))


def _find_min_passing(min_h: int, max_h: int, t: int, p: float, d: float, c: float) -> int:
    count = max_h - min_h
    while count > 0:
        step = count // 2
        h = min_h + step
        if _odds(h, t, p, d) < 1 - c:
            count = step
        else:
            min_h = h + 1
            count -= step + 1
    return min_h


class _MinPassing:
    """early_stopping.cc MinPassingQueriesFinder: the search range interpolated from earlier answers, as LoadGen does,
    so a bound that floating point leaves ambiguous lands where LoadGen's lands."""

    def __init__(self) -> None:
        self._cache: dict[int, int] = {}
        self._keys: list[int] = []  # the cache's keys, sorted: sorting them at each call made 2M queries cost 16 s

    def __call__(self, t: int, p: float, d: float, c: float) -> int:
        if t in self._cache:
            return self._cache[t]
        below = self._keys[max(0, bisect.bisect_left(self._keys, t) - 2): bisect.bisect_left(self._keys, t)]
        x0, y0, x1, y1 = -1, 0, 0, math.ceil(math.log(1 - c) / math.log(p - d))
        if below:
            x1, y1 = below[-1], self._cache[below[-1]]
        if len(below) > 1:
            x0, y0 = below[-2], self._cache[below[-2]]
        min_slope = (p - d) / (1 - p + d)
        max_slope = float((y1 - y0) * (x1 - x0))
        min_h = int((t - x1) * min_slope + y1)
        max_h = int((t - x1) * max_slope + y1 + 1)
        h = _find_min_passing(min_h, max_h, t, p, d, c)
        self._cache[t] = h
        bisect.insort(self._keys, t)
        return h
