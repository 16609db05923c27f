"""Make what the lock pins but the cache lacks, where it can be made again here from cached inputs.

The lock pins two kinds of file that no server hands out:

* a wheel cross-built from its sdist (``sourcebuild``; its entry has a
  ``build`` recipe instead of a url): rebuilt from the locked sdist, build
  requirements and target .debs;
* the converted model (``convert``; the lock has a ``conversion``): the
  manifest's recipe run on the locked source.

``materialise`` makes the missing ones and checks each against its locked
sha256 (ReproductionMismatch otherwise). It never resolves and never downloads
what the lock pins: its inputs must be in the cache already (``fetch`` puts
them there), or it raises CacheMissError naming them. ``fetch`` and the image
build call it before the frozen check (``lock.check_frozen``), which only
reads, hashes and compares.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from packager.cache import Cache
from packager.errors import EnvironmentMissing, StaleLockError
from packager.inputs import convert, sourcebuild
from packager.inputs.lockfile import Lock
from packager.manifest import MANIFEST_NAME, Manifest
from packager.platforms import Platform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Made:
    """One file materialise wrote into the cache."""

    what: str  # e.g. "linux/arm64 wheel mlcommons_loadgen-6.0.17-cp311-cp311-linux_aarch64.whl"
    sha256: str
    recipe: str  # the sourcebuild or conversion recipe that made it
    seconds: float


@dataclass(frozen=True)
class MaterialiseReport:
    made: tuple[Made, ...]
    present: tuple[str, ...]  # makeable files that were in the cache already, by name

    @property
    def nothing_to_do(self) -> bool:
        return not self.made


def materialise(manifest: Manifest, lock: Lock, cache: Cache, platforms: Sequence[Platform]) -> MaterialiseReport:
    """Build the missing cross-built wheels of ``platforms`` and convert the missing model; report what was made."""
    # 1. the lock belongs to this manifest: the recipes below read the manifest
    if lock.manifest_sha256 != manifest.digest():
        raise StaleLockError(f"the lock of {lock.artifact} is stale: request.yaml changed since it was locked: run `request-pack lock`")
    made: list[Made] = []
    present: list[str] = []
    # 2. wheels built from their sdist, for the platforms asked for that the lock covers
    #    (a platform it lacks is the frozen check's to report)
    for plat in sorted(platforms, key=lambda p: p.value):
        entry = lock.platforms.get(plat.value)
        for w in entry.wheels if entry else []:
            if w.build is None:
                continue
            what = f"{plat.value} wheel {w.filename}"
            if cache.has(w.sha256):
                present.append(what)
                continue
            built = sourcebuild.ensure(cache, w.build, manifest.base_system, name=w.name, version=w.version,
                                       expected_sha256=w.sha256)
            made.append(Made(what, built.sha256, f"{w.build.recipe} from {w.build.sdist.filename}", built.seconds))
    # 3. the converted model, from its locked source in the cache
    m = lock.model
    if m.conversion is not None:
        what = f"model {m.filename}"
        if cache.has(m.sha256):
            present.append(what)
        else:
            made.append(_convert(manifest, lock, cache, what))
    for item in made:
        log.info("made %s (%s) in %.0f s: sha256 %s", item.what, item.recipe, item.seconds, item.sha256[:16])
    return MaterialiseReport(made=tuple(made), present=tuple(present))


def _convert(manifest: Manifest, lock: Lock, cache: Cache, what: str) -> Made:
    m = lock.model
    assert m.conversion is not None
    src = m.source
    # the recipe reads only cached, locked bytes: the source member (or its wheel) or the local file
    if src.kind == "pypi-file" and not (cache.has(src.sha256) or (src.wheel_sha256 and cache.has(src.wheel_sha256))):
        cache.path_of(src.wheel_sha256 or src.sha256, name=f"model wheel {src.wheel}")  # raises CacheMissError naming it
    local = cache.path_of(src.sha256, size=src.size, verify=True, name=f"model source {src.path}") if src.kind == "file" else None
    start = time.monotonic()
    try:
        result = convert.convert_manifest(manifest, cache, file=f"{lock.artifact}/{MANIFEST_NAME}", local_source=local)
    except EnvironmentMissing as e:
        raise type(e)(f"{what} is not in the cache and cannot be converted here: {e}; "
                      "or supply the converted file with `request-pack fetch ARTIFACT --from FILE`") from e
    return Made(what, result.sha256, m.conversion.recipe, round(time.monotonic() - start, 1))
