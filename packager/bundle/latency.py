"""A MultiStream claim recomputed from the per-query records a result carries (check 4 of verify, and export).

Three things must agree, in integer nanoseconds: the per-query latencies
(``queries.tsv``, LoadGen's own, see ``packager.querylog``), LoadGen's figures in
the scenario's ``mlperf_log_detail.txt``, and the claim in metrics.json (count,
mean, p50/p90/p99, min, max, the early-stopping p99 and the samples per query). A
p99 edited in metrics.json, a latency edited in the records or a detail log from
another run each break one of the two comparisons, and the problem names the file
and the figure.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from packager import querylog
from packager.mllog import read_detail
from packager.results import MultiStreamStats

DETAIL_NAME = "mlperf_log_detail.txt"
MAX_DETAIL_BYTES = 1 << 20  # LoadGen's detail log of one scenario is ~30 KB
# metrics.json holds LoadGen's nanoseconds times 1e-9; the same product here, so only float printing may differ.
_REL = 1e-12

# metrics.json field -> the detail log's key
_CLAIMS = {
    "count": "result_query_count",
    "mean_s": "result_mean_query_latency_ns",
    "p50_s": "result_50.00_percentile_per_query_latency_ns",
    "p90_s": "result_90.00_percentile_per_query_latency_ns",
    "p99_s": "result_99.00_percentile_per_query_latency_ns",
    "min_s": "result_min_query_latency_ns",
    "max_s": "result_max_query_latency_ns",
}


def multistream_problems(root: Path, ms: MultiStreamStats) -> list[str]:
    """Everything in which the claim, LoadGen's detail log and the per-query records of ``root`` disagree."""
    if not ms.queries:
        return ["metrics.json's multistream names no per-query records (queries)"]
    parts = ms.queries.split("/")
    if ms.queries.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in ms.queries:
        return [f"multistream.queries {ms.queries!r} is not a plain relative path inside the result"]
    records = root / ms.queries
    detail_path = records.parent / DETAIL_NAME
    try:
        latencies = querylog.read(records)
    except querylog.QueryLogError as e:
        return [str(e).replace(str(root) + "/", "")]
    try:
        detail = _detail(detail_path)
    except ValueError as e:
        return [str(e).replace(str(root) + "/", "")]
    rel_records, rel_detail = ms.queries, str(detail_path.relative_to(root))
    problems = [f"{rel_records} gives {key} {mine}, {rel_detail} logged {theirs}"
                for key, (mine, theirs) in querylog.differences(latencies, detail).items()]
    figures = querylog.stats(latencies)
    for name, key in _CLAIMS.items():
        claimed = getattr(ms, name)
        want = figures[key] if name == "count" else figures[key] * 1e-9
        if not math.isclose(claimed, want, rel_tol=_REL, abs_tol=0.0):
            problems.append(f"multistream.{name} claimed {claimed}, recomputed {want} from {rel_records}")
    est = figures["early_stopping_latency_ms"] * 1e-9 if figures["early_stopping_met"] else None
    if (ms.early_stopping_p99_s is None) != (est is None) or (
            est is not None and not math.isclose(ms.early_stopping_p99_s or 0.0, est, rel_tol=_REL, abs_tol=0.0)):
        problems.append(f"multistream.early_stopping_p99_s claimed {ms.early_stopping_p99_s}, recomputed {est} "
                        f"from {rel_records}")
    if detail.get("effective_samples_per_query") != ms.samples_per_query:
        problems.append(f"multistream.samples_per_query claimed {ms.samples_per_query}, {rel_detail} says "
                        f"{detail.get('effective_samples_per_query')}")
    return problems


def _detail(path: Path) -> dict:
    """LoadGen's detail log, a regular file within its cap; ValueError naming the file otherwise."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DETAIL_BYTES:
        raise ValueError(f"{path}: not a regular file of at most {MAX_DETAIL_BYTES} bytes")
    try:
        return read_detail(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8") from None
