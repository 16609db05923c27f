"""A tuning database as an input: pinned by its name, cached by its sha256, placed beside the model.

``request-pack tune`` writes the database into the tuned artifact as
``tuning/<sha256>.json`` and names that path in ``framework.options.tuning_log``.
The name is the pin: the manifest's digest, which the lock records, covers the
database's bytes, and the build refuses a file whose bytes differ from its name.
No lock format change, and an artifact without a tuning log keeps its bytes.
"""

from __future__ import annotations

from pathlib import Path

from packager.cache import Cache
from packager.errors import BadInput
from packager.manifest import Manifest
from packager.platforms import Platform

TUNING_DIR = "tuning"


def pinned_name(sha256: str) -> str:
    """Where an artifact keeps a tuning database, relative to its directory."""
    return f"{TUNING_DIR}/{sha256}.json"


def pinned_sha256(rel: str) -> str | None:
    """The sha256 a ``framework.options.tuning_log`` path pins (``tuning/<sha256>.json``), or None."""
    name = Path(rel).name
    stem = name[: -len(".json")] if name.endswith(".json") else ""
    return stem if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) else None


def tuning_log_of(manifest: Manifest, platform: Platform) -> tuple[str, str] | None:
    """The platform's tuning database as (path in the artifact, sha256 its name pins), or None."""
    rel = manifest.for_platform(platform).framework.options.tuning_log
    if not rel:
        return None
    sha = pinned_sha256(rel)
    if sha is None:
        raise BadInput(f"{rel!r} does not pin its bytes: name it {pinned_name('<sha256>')} (request-pack tune does)",
                       field="framework.options.tuning_log")
    return rel, sha


def cache_tuning_logs(manifest: Manifest, artifact_dir: Path, cache: Cache, platforms: list[Platform]) -> None:
    """Each tuning database the build puts in an image, checked against the sha256 its name pins and
    cached (already cached: the artifact's copy may be absent)."""
    for platform in platforms:
        pinned = tuning_log_of(manifest, platform)
        if pinned and not cache.has(pinned[1]):
            rel, sha = pinned
            if not (artifact_dir / rel).is_file():
                raise BadInput("the tuning database is missing and not in the cache", file=artifact_dir / rel)
            cache.put_file(artifact_dir / rel, sha, name=f"{manifest.name} tuning database")
