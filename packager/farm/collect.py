"""``farm collect``: every bundle of a results location verified, the good ones published, the bad ones named.

Whatever scheduler ran the jobs, collection trusts nothing the boards wrote: each
``RESULTS/<key>/*.bundle.tar.gz`` is verified with the given trusted keys (the
done marker is only the board's claim) and published through the scoreboard's
own ``publish``, which inserts on the bundle digest, so collecting twice leaves
one entry per bundle. A key with no bundle is reported with what its directory
shows (still running, failed attempt) instead of being silently missing.

Kubernetes pods sign nothing (the evaluator's key never enters the cluster), so
``kubernetes.collect_iter`` first seals each Job whose outputs were copied off the
results claim to ``RESULTS/<job name>/<stage>`` (``kubernetes.seal``: min_top1,
image against the build record, bundle, sign, verify, done marker), then
publishes the job's directory exactly as for Slurm. A sealed job is not sealed
again, so collecting twice publishes nothing new.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from packager.bundle.keys import TrustStore
from packager.errors import BadInput, BundleCheckFailed, RequestPackError
from packager.farm.base import Collected
from packager.farm.store import (
    ATTEMPTS_NAME,
    JOB_NAME,
    bundles,
    done_record,
    job_dirs,
    read_lines,
)

log = logging.getLogger(__name__)


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


def publish_dir(board: Any, job_dir: Path, trust: TrustStore, labels: Path | None, *,
                 unconfirmed: Callable[[Path], str], sealed: bool = False) -> Iterator[Collected]:
    """Every bundle of one job's directory verified and published; shared by every scheduler."""
    from packager.scoreboard.publish import publish

    for bundle in bundles(job_dir):
        try:
            p = publish(bundle, board, trust, labels=labels)
        except BundleCheckFailed as e:
            log.warning("%s: %s", bundle, e)
            note = "" if done_record(job_dir) is None else " (its done marker claimed it verified)"
            yield Collected(job_dir, bundle, "bad", f"{type(e).__name__}: {e}{note}", sealed=sealed)
            continue
        # Verified here, so it counts; but say so when it was never confirmed where it was made
        # (its own verification failed, or the attempt was cut short after signing).
        note = "" if done_record(job_dir) is not None else f"no done marker: {unconfirmed(job_dir)}"
        yield Collected(job_dir, bundle, "published" if p.inserted else "present", note, artifact=p.row.artifact,
                        platform=p.row.platform, top1=p.row.top1, bundle_digest=p.bundle_digest, sealed=sealed)


def collect_iter(results: Path, board_url: str, trust: TrustStore, *, labels: Path | None = None) -> Iterator[Collected]:
    from packager.scoreboard.store import Board

    if not results.is_dir():
        raise BadInput("no such results directory", file=results, field="--results")
    dirs = job_dirs(results)
    if not dirs:
        raise BadInput(f"no farm job directories (*/{JOB_NAME}) here", file=results, field="--results")
    with Board(board_url) as board:
        for job_dir in dirs:
            if not bundles(job_dir):
                yield Collected(job_dir, None, "missing", _why_missing(job_dir))
                continue
            yield from publish_dir(board, job_dir, trust, labels, unconfirmed=_why_missing)


def find_artifacts(roots: Sequence[Path]) -> dict[str, Path]:
    """Artifact directories by their manifest's digest: each root is an artifact (its request.yaml)
    or a directory of them. A Job names the digest of the manifest it was planned from, not a path
    on the submitter's machine, so this is how its artifact is found again."""
    from packager.manifest import load_manifest

    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        dirs = [root] if (root / "request.yaml").is_file() else sorted(p.parent for p in root.glob("*/request.yaml"))
        if not dirs:
            raise BadInput("neither an artifact (request.yaml) nor a directory of artifacts", file=root,
                           field="--artifacts")
        for d in dirs:
            try:
                found.setdefault(load_manifest(d).digest(), d.resolve())
            except RequestPackError as e:  # another artifact's problem: it only matters if a Job names it
                log.warning("skipping %s: %s", d, e)
    return found


def collect(results: Path, board_url: str, trust: TrustStore, *, labels: Path | None = None) -> list[Collected]:
    return list(collect_iter(results, board_url, trust, labels=labels))


def summary(rows: Sequence[Collected]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts
