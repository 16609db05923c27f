"""Hostile MultiStream per-query records (``queries.tsv``) in a signed bundle, refused by verify and publish.

The genuine bundle is test_multistream_verify's (a real LoadGen 6.0.17 MultiStream run of 662 queries on a
tiny net); each case edits its records (and, where said, the signed claim to fit them) and is signed by the
*trusted* key, as a careless or dishonest pipeline would: only check 4 (the records parsed under their caps,
the figures recomputed and compared with LoadGen's signed detail log) can refuse it, in one line, exit 14.
Links, special files and oversized files are refused before that by check 2 (exit 12/16).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from test_multistream_verify import _metrics, _signed, _write, keys, unsigned  # noqa: F401  (fixtures)

from packager import querylog
from packager.bundle.verify import verify_bundle
from packager.errors import RequestPackError
from packager.scoreboard.publish import publish
from packager.scoreboard.store import Board

Q = "loadgen/MultiStream/queries.tsv"


def _rows(text: str) -> list[int]:
    return [int(r.split("\t")[1]) for r in text.splitlines()[1:]]


def _records(edit: Callable[[str], bytes]) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        p = root / Q
        p.write_bytes(edit(p.read_text()))
    return change


def _fit_claim(latencies: Callable[[list[int]], list[int]]) -> Callable[[Path], None]:
    """Records edited, and the signed claim recomputed from them: only LoadGen's detail log can tell."""
    def change(root: Path) -> None:
        p = root / Q
        lat = latencies(_rows(p.read_text()))
        querylog.write(p, lat)
        f = querylog.stats(lat)
        m = _metrics(root)
        ms = m.multistream.model_copy(update={"count": f["result_query_count"], "mean_s": f["result_mean_query_latency_ns"] * 1e-9,
                                              "p99_s": f["result_99.00_percentile_per_query_latency_ns"] * 1e-9})
        _write(root, m.model_copy(update={"multistream": ms}))
    return change


def _claim(**change: object) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        m = _metrics(root)
        _write(root, m.model_copy(update={"multistream": m.multistream.model_copy(update=change)}))
    return edit


HEAD = querylog.HEADER + "\n"
CASES: list[tuple[str, Callable[[Path], None], int, str]] = [
    ("empty", _records(lambda t: b""), 14, "no queries"),
    ("header-only", _records(lambda t: HEAD.encode()), 14, "no queries"),
    ("nan", _records(lambda t: t.replace("\t", "\tNaN", 1).replace("\tNaN", "\t", 1).replace("0\t", "0\tNaN", 1).encode()), 14,
     "in sequence"),
    ("negative", _records(lambda t: (HEAD + "0\t-5\n").encode()), 14, "in sequence"),
    ("float", _records(lambda t: (HEAD + "0\t1.5\n").encode()), 14, "in sequence"),
    ("plus-sign", _records(lambda t: (HEAD + "0\t+5\n").encode()), 14, "in sequence"),
    ("exponent", _records(lambda t: (HEAD + "0\t1e9\n").encode()), 14, "in sequence"),
    ("leading-space", _records(lambda t: (HEAD + "0\t 5\n").encode()), 14, "in sequence"),
    ("crlf", _records(lambda t: t.replace("\n", "\r\n").encode()), 14, "queries.tsv:1:"),
    ("nul-byte", _records(lambda t: (HEAD + "0\t5\x00\n").encode()), 14, "in sequence"),
    ("arabic-indic-digits", _records(lambda t: (HEAD + "0\t\u0665\u0665\n").encode()), 14, "in sequence"),
    ("superscript-digit", _records(lambda t: (HEAD + "0\t5\u00b2\n").encode()), 14, "in sequence"),
    ("latin1-byte", _records(lambda t: HEAD.encode() + b"0\t5\xe9\n"), 14, "in sequence"),
    ("extra-column", _records(lambda t: (HEAD + "0\t5\t7\n").encode()), 14, "in sequence"),
    ("one-column", _records(lambda t: (HEAD + "0\n").encode()), 14, "in sequence"),
    ("blank-line", _records(lambda t: (t + "\n").encode()), 14, "in sequence"),
    ("sequence-from-1", _records(lambda t: (HEAD + "1\t5\n").encode()), 14, "in sequence"),
    ("sequence-repeats", _records(lambda t: (t + f"{len(_rows(t)) - 1}\t5\n").encode()), 14, "in sequence"),
    ("long-line", _records(lambda t: (HEAD + "0\t" + "9" * 80 + "\n").encode()), 14, "longer than 64 bytes"),
    ("overflow-10e50", _records(lambda t: (HEAD + "".join(f"{i}\t{10 ** 50}\n" for i in range(662))).encode()), 14, "logged"),
    ("beyond-int64", _records(lambda t: (HEAD + "".join(f"{i}\t{2 ** 64 + i}\n" for i in range(662))).encode()), 14, "logged"),
    ("2000001-short-records", _records(lambda t: (HEAD + "".join(f"{i}\t1\n" for i in range(2_000_001))).encode()), 14,
     "more than 2000000 queries"),
    ("fit-claim-halved", _fit_claim(lambda lat: [v // 2 for v in lat]), 14, "logged"),
    ("fit-claim-all-zero", _fit_claim(lambda lat: [0] * len(lat)), 14, "logged"),
    ("fit-claim-one-query", _fit_claim(lambda lat: lat[:1]), 14, "logged"),
    ("fit-claim-twice-the-queries", _fit_claim(lambda lat: lat + lat), 14, "logged"),
    ("claim-count-2e18", _claim(count=2 * 10 ** 18), 14, "multistream.count claimed"),
    ("claim-p99-negative", _claim(p99_s=-1.0), 14, "multistream.p99_s claimed"),
    ("claim-samples-per-query", _claim(samples_per_query=1), 14, "samples_per_query claimed 1"),
    ("queries-is-metrics-json", _claim(queries="metrics.json"), 14, "mlperf_log_detail.txt is not a file of the bundle"),
    ("queries-is-the-detail-log", _claim(queries="loadgen/MultiStream/mlperf_log_detail.txt"), 14, "longer than 64 bytes"),
    ("queries-absolute", _claim(queries="/etc/passwd"), 14, "not a file of the bundle"),
    ("queries-dot-dot", _claim(queries="loadgen/../../../etc/passwd"), 14, "not a file of the bundle"),
    ("queries-backslash", _claim(queries="loadgen\\MultiStream\\queries.tsv"), 14, "not a file of the bundle"),
    ("queries-empty", _claim(queries=""), 14, "per-query records '' are not a file of the bundle"),
    ("detail-log-emptied", lambda root: (root / "loadgen/MultiStream/mlperf_log_detail.txt").write_bytes(b""), 14, "logged"),
    ("detail-log-2MiB", lambda root: (root / "loadgen/MultiStream/mlperf_log_detail.txt").write_bytes(b":::MLLOG {}\n" * 200_000), 14,
     "at most 1048576 bytes"),
]

# After signing: check 2 refuses what is not a regular file within its cap, before any record is parsed.
AFTER: list[tuple[str, Callable[[Path], None], int, str]] = [
    ("queries-symlink-dev-zero", lambda root: ((root / Q).unlink(), (root / Q).symlink_to("/dev/zero")), 12, "symlink or special file"),
    ("queries-fifo", lambda root: ((root / Q).unlink(), os.mkfifo(root / Q)), 12, "symlink or special file"),
    ("queries-sparse-3GiB", lambda root: os.truncate(root / Q, 3 << 30), 16, "over the 67108864-byte limit"),
    ("detail-symlink-outside", lambda root: ((root / "loadgen/MultiStream/mlperf_log_detail.txt").unlink(),
                                              (root / "loadgen/MultiStream/mlperf_log_detail.txt").symlink_to("/etc/hostname")),
     12, "symlink or special file"),
]


def _refused(e: BaseException, code: int, message: str, name: str) -> None:
    assert isinstance(e, RequestPackError), f"{name}: {type(e).__name__} would be a traceback: {e}"
    text = str(e)
    assert e.return_code == code, f"{name}: exit {e.return_code}, expected {code}: {text}"
    assert message in text and "\n" not in text and len(text) < 4000, f"{name}: {text[:500]!r}"


@pytest.mark.parametrize("name, change, code, message", CASES + AFTER, ids=[c[0] for c in CASES + AFTER])
def test_refused_by_verify_and_publish(name, change, code, message, unsigned, keys, tmp_path):  # noqa: F811
    after = name in {c[0] for c in AFTER}
    bundle = _signed(unsigned, tmp_path, keys, None if after else change)
    if after:
        change(bundle)
    with pytest.raises(Exception) as e:
        verify_bundle(bundle, keys[1])
    _refused(e.value, code, message, name)
    with Board(f"sqlite:///{tmp_path / 'board.db'}") as board:
        with pytest.raises(Exception) as e:
            publish(bundle, board, keys[1])
        _refused(e.value, code, message, name)
        assert board.rows() == []


def test_the_generator_covers_the_classes() -> None:
    assert len(CASES) + len(AFTER) >= 40
