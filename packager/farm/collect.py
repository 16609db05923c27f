"""``farm collect``: every bundle of a results location verified, the good ones published, the bad ones named.

Whatever engine ran the jobs, collection trusts nothing the boards wrote: each
``RESULTS/<key>/*.bundle.tar.gz`` is verified with the given trusted keys (the
done marker is only the board's claim) and published through the scoreboard's
own ``publish``, which inserts on the bundle digest, so collecting twice leaves
one entry per bundle. A key with no bundle is reported with what its directory
shows (still running, failed attempt) instead of being silently missing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..bundle.keys import TrustStore
from ..errors import BadInput, BundleCheckFailed
from .store import ATTEMPTS_NAME, JOB_NAME, bundles, done_record, job_dirs, read_lines

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collected:
    job_dir: Path
    bundle: Path | None
    outcome: str  # published, present (already on the board), bad (verification failed), missing (no bundle)
    reason: str = ""
    artifact: str = ""
    platform: str = ""
    top1: float | None = None
    bundle_digest: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("published", "present")


def _why_missing(job_dir: Path) -> str:
    attempts = read_lines(job_dir / ATTEMPTS_NAME)
    if not attempts:
        return "no attempt has started (queued, or never submitted)"
    last = attempts[-1]
    if last["event"] in ("done", "skipped"):
        return f"attempt on {last['node']} ended {last['event']} but its done marker no longer matches the bundle"
    if last["event"] == "failed":
        return f"last attempt on {last['node']} failed with exit code {last.get('exit_code')}" + (
            f": {last['error']}" if last.get("error") else "")
    return f"attempt on {last['node']} has not finished ({last['event']})"


def collect_iter(results: Path, board_url: str, trust: TrustStore, *, labels: Path | None = None) -> Iterator[Collected]:
    from ..scoreboard.publish import publish
    from ..scoreboard.store import Board

    if not results.is_dir():
        raise BadInput("no such results directory", file=results, field="--results")
    dirs = job_dirs(results)
    if not dirs:
        raise BadInput(f"no farm job directories (*/{JOB_NAME}) here", file=results, field="--results")
    with Board(board_url) as board:
        for job_dir in dirs:
            found = bundles(job_dir)
            if not found:
                yield Collected(job_dir, None, "missing", _why_missing(job_dir))
                continue
            for bundle in found:
                try:
                    p = publish(bundle, board, trust, labels=labels)
                except BundleCheckFailed as e:
                    log.warning("%s: %s", bundle, e)
                    note = "" if done_record(job_dir) is None else " (its done marker claimed it verified)"
                    yield Collected(job_dir, bundle, "bad", f"{type(e).__name__}: {e}{note}")
                    continue
                # Verified here, so it counts; but say so when the board never confirmed it
                # (its own verification failed, or the attempt was cut short after signing).
                note = "" if done_record(job_dir) is not None else f"no done marker: {_why_missing(job_dir)}"
                yield Collected(job_dir, bundle, "published" if p.inserted else "present", note, artifact=p.row.artifact,
                                platform=p.row.platform, top1=p.row.top1, bundle_digest=p.bundle_digest)


def collect(results: Path, board_url: str, trust: TrustStore, *, labels: Path | None = None) -> list[Collected]:
    return list(collect_iter(results, board_url, trust, labels=labels))


def summary(rows: Sequence[Collected]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts
