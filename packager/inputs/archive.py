"""One archive of every input a lock names, and filling a cache from it (or from loose files), offline.

``plan`` lists what goes in: the manifest and the lock (and a local model
source, e.g. resnet-tvm's ``weights-seed.json``), the Dockerfile templates the
lock pins, and every file of every platform the lock pins (.debs, wheels,
sdists and the build inputs of cross-built wheels, the cross-built wheels and
the converted model themselves) plus the inputs of the conversion recipe that
the lock does not list (the model's source wheel, the int8 recipe's
calibration wheel). ``index.json`` maps each entry to its sha256, size and
member path. The tar itself is written by the one deterministic tar writer
(``packager.image.writer.oci``, called by the CLI: ``inputs`` sits below
``image``): a plain, uncompressed tar (.debs and wheels are compressed
already) with sorted members, mtime 0 and numeric owner 0, so the same lock
and cache give the same bytes; ``tar tvf`` lists it and any archive service
takes it.

Layout below the top directory (the artifact's name):
``index.json``; ``artifact/`` (request.yaml, request.lock, local sources);
``templates/``; .debs at their mirror path (``debian/pool/main/...``,
``debian-security/pool/...``), so an unpacked archive served over HTTP is a
pool a lock's URLs can be re-pointed at; ``pypi/`` downloaded wheels and
sdists; ``built/`` wheels cross-built from their sdist; ``model/`` the model.

``fill_cache`` is the reverse and contacts nothing: each wanted object is
read from the archive (or found among the loose files of a directory by its
hash) and stored only if its bytes hash to the lock's pin; a tampered member
is refused with the entry's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from packager.cache import Cache, sha256_file
from packager import wire
from packager.errors import BadInput, CacheMissError, IntegrityError, StaleLockError, UnsafeArchive
from packager.inputs import tarscan
from packager.inputs.models.quantise import CalibrationSet
from packager.inputs.lockfile import Lock, LockedObject, load_lock, locked_objects
from packager.compose import components_root
from packager.manifest import LOCK_NAME, MANIFEST_NAME, Manifest, load_composed, manifest_path, resolved_yaml
from packager.repo import DOCKERFILE_TEMPLATES

log = logging.getLogger(__name__)

ARCHIVE_VERSION = tarscan.ARCHIVE_VERSION
INDEX_NAME = tarscan.INDEX_NAME
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """One file of the archive; ``entries`` are the lock entries it serves (an arch:all .deb serves two platforms)."""

    path: str  # below the top directory
    sha256: str
    size: int
    source: Path | None  # where its bytes are read from when writing; None for index.json
    entries: tuple[str, ...]
    mode: int = 0o644


@dataclass(frozen=True)
class Plan:
    top: str
    index: bytes
    members: tuple[Member, ...]  # sorted by path; index.json is not among them

    @property
    def payload(self) -> int:
        return sum(m.size for m in self.members)


@dataclass(frozen=True)
class Wanted:
    """An object a cache should hold: from the lock, or an input of the conversion recipe."""

    entry: str
    sha256: str
    size: int | None = None
    sources: tuple[str, ...] = ()  # download locations, in order
    made_by: str = "fetch"


def wanted_objects(manifest: Manifest, lock: Lock, platforms: list[str] | None = None) -> list[Wanted]:
    """Everything the lock names for these (default: all its) platforms, and the recipe inputs it does not list, by sha256 once."""
    out = {o.sha256: _wanted(o) for o in reversed(locked_objects(lock, platforms))}  # reversed: the first name wins
    for w in recipe_inputs(manifest):
        out.setdefault(w.sha256, w)
    return sorted(out.values(), key=lambda w: w.entry)


def _wanted(o: LockedObject) -> Wanted:
    return Wanted(o.name, o.sha256, o.size, o.sources, o.made_by)


def recipe_inputs(manifest: Manifest) -> list[Wanted]:
    """Inputs of the conversion recipe that the lock does not name: the calibration wheel of a static quantisation.

    Its URL is not pinned anywhere (PyPI's listing is asked at download time); its sha256 is, in the manifest.
    """
    conv = manifest.model.conversion
    if conv is None or "calibration" not in conv.args:
        return []
    cal = CalibrationSet.from_args(conv.args["calibration"])
    return [Wanted(f"recipe calibration wheel {cal.wheel}", cal.wheel_sha256)]


# --- planning the archive -------------------------------------------------------------------------


SOURCE_DIR = "request-pack"  # request-pack's own source below the top directory: what the harness layer is made from


@dataclass(frozen=True)
class Source:
    """One file of request-pack's own source that goes into every image (``image.plan.harness_files``)."""

    file: Path
    rel: str  # below the package's parent: ``packager/harness/__main__.py``
    mode: int  # 0o644 or 0o755, as the harness layer records it


def plan(artifact_dir: Path, cache: Cache, sources: Iterable[Source] = ()) -> Plan:
    """Every member and the index, from the lock and the cache; CacheMissError names the first absent entry.

    ``sources`` are the request-pack files the image's harness layer is made from (the caller
    lists them: ``inputs`` sits below ``image``); with them, another checkout rebuilds the same image.
    """
    mfile = manifest_path(Path(artifact_dir))
    artifact_dir = mfile.parent
    manifest, composed = load_composed(mfile)
    lock_path = artifact_dir / LOCK_NAME
    lock = load_lock(lock_path)
    if lock.manifest_sha256 != manifest.digest():
        raise StaleLockError(f"{lock_path}: stale: request.yaml changed since it was locked: run `request-pack lock`")
    files: dict[str, tuple[str, Path]] = {}  # entry -> (member path, file)
    if composed.composed:
        # The archived manifest is the resolved one (docs/components.md), so the restored artifact stands
        # alone; the component and parent files it was resolved from go beside it, for the record.
        resolved = cache.object_path(cache.put_bytes(resolved_yaml(manifest).encode(), name=f"{manifest.name} resolved {MANIFEST_NAME}"))
        files[f"manifest {MANIFEST_NAME}"] = (f"artifact/{MANIFEST_NAME}", resolved)
        root = components_root(artifact_dir)
        for rel in sorted(composed.files):
            if (root / rel).resolve() != mfile.resolve() and not Path(rel).is_absolute():
                files[f"composed from {rel}"] = (f"composed/{rel}", root / rel)
    else:
        files[f"manifest {MANIFEST_NAME}"] = (f"artifact/{MANIFEST_NAME}", mfile)
    files[f"lock {LOCK_NAME}"] = (f"artifact/{LOCK_NAME}", lock_path)
    src = lock.model.source
    if src.kind == "file" and src.path:
        files[f"model source {src.path}"] = (f"artifact/{src.path}", artifact_dir / src.path)
    for rel in sorted(lock.templates):
        files[f"template {rel}"] = (f"templates/{rel}", DOCKERFILE_TEMPLATES.parent / rel)
    by_path: dict[str, Member] = {}
    for entry, (path, file) in files.items():
        _add(by_path, Member(path, sha256_file(file), file.stat().st_size, file, (entry,)))
    for lock_entry, rel in sorted(lock.templates.items()):
        got = by_path[f"templates/{lock_entry}"].sha256
        if got != rel:
            raise StaleLockError(f"{lock_path}: stale: template {lock_entry} changed since it was locked: run `request-pack lock`")
    for src in sources:
        _add(by_path, Member(f"{SOURCE_DIR}/{src.rel}", sha256_file(src.file), src.file.stat().st_size, src.file,
                             (f"request-pack {src.rel}",), src.mode))
    for w in wanted_objects(manifest, lock):
        if not cache.has(w.sha256):
            raise CacheMissError(f"{w.entry} is not in the cache: run `request-pack fetch {artifact_dir}` first")
        path = cache.path_of(w.sha256, size=w.size, verify=True, name=w.entry)
        _add(by_path, Member(member_path(w), w.sha256, path.stat().st_size, path, (w.entry,)))
    members = tuple(sorted(by_path.values(), key=lambda m: m.path))
    index = {
        "archive_version": ARCHIVE_VERSION,
        "artifact": lock.artifact,
        "manifest_sha256": lock.manifest_sha256,
        "lock_sha256": sha256_file(lock_path),
        "platforms": sorted(lock.platforms),
        "entries": sorted(({"entry": e, "sha256": m.sha256, "size": m.size, "path": m.path,
                            **({"mode": m.mode} if m.path.startswith(f"{SOURCE_DIR}/") else {})}
                           for m in members for e in m.entries), key=lambda d: d["entry"]),
        # The recipe's tools are pinned by version, not by file: they are not in the archive.
        "recipe_tools": list(lock.model.conversion.requirements) if lock.model.conversion else [],
    }
    return Plan(top=lock.artifact, index=(json.dumps(index, indent=2, sort_keys=True) + "\n").encode(), members=members)


def member_path(w: Wanted) -> str:
    """A readable, stable path: .debs at their mirror path, wheels and sdists by file name."""
    url = w.sources[0] if w.sources else ""
    filename = entry_filename(w.entry)
    if filename.endswith(".deb"):
        # unquoted: the file on disk is what a web server serving the unpacked archive answers for the URL
        return unquote(urlparse(url).path).lstrip("/") if url else f"debian/{filename}"
    if w.made_by == "sourcebuild":
        return f"built/{filename}"
    if w.made_by == "convert":
        return f"model/{filename}"
    if w.entry.startswith("model source ") and not url:  # a member read out of the model's wheel
        return f"model/source/{filename}"
    return f"pypi/{filename}"


def entry_filename(entry: str) -> str:
    """The file name in a lock entry's name (``linux/arm64 build input X of Y`` names X)."""
    m = re.match(r".* build input (\S+) of \S+$", entry)
    return m.group(1) if m else PurePosixPath(entry.rsplit(" ", 1)[-1]).name


def _add(by_path: dict[str, Member], m: Member) -> None:
    have = by_path.get(m.path)
    if have is None:
        by_path[m.path] = m
    elif have.sha256 == m.sha256:
        by_path[m.path] = Member(m.path, m.sha256, m.size, have.source, tuple(sorted({*have.entries, *m.entries})))
    else:  # two different files under one name: keep both apart by hash
        alt = f"{PurePosixPath(m.path).parent}/{m.sha256}/{PurePosixPath(m.path).name}"
        by_path[alt] = m


# --- reading an archive or a directory ------------------------------------------------------------


@dataclass(frozen=True)
class FillReport:
    source: Path
    filled: tuple[str, ...]  # entries stored from the source
    present: tuple[str, ...]  # entries the cache had already
    absent: tuple[Wanted, ...]  # entries the source does not hold


def is_archive(path: Path) -> bool:
    return tarscan.looks_like_archive(path)


def read_index(archive: Path) -> dict:
    """The checked index (``tarscan``: every header read and bounded first), with ``_top``, the top directory."""
    with tarscan.open_archive(archive) as a:
        return {**a.index.model_dump(exclude_none=True), "_top": a.top}


def fill_cache(source: Path, wanted: Iterable[Wanted], cache: Cache) -> FillReport:
    """Store every wanted object the archive or directory holds, each checked against its sha256; contacts nothing."""
    source = Path(source)
    wanted = list(wanted)
    todo = {w.sha256: w for w in wanted if not cache.has(w.sha256)}
    present = tuple(w.entry for w in wanted if w.sha256 not in todo)
    if source.is_dir():
        filled = _fill_from_dir(source, todo, cache)
    elif is_archive(source):
        filled = _fill_from_archive(source, todo, cache)
    else:
        raise BadInput("neither a request-pack archive (tar) nor a directory", file=source, field="--from")
    absent = tuple(w for sha, w in todo.items() if sha not in filled)
    log.info("%s: %d stored, %d present, %d absent", source, len(filled), len(present), len(absent))
    return FillReport(source, tuple(todo[s].entry for s in filled), present, absent)


MAX_LOOSE_FILES = 1 << 14  # a kept /var/cache/apt/archives, a pip download directory, an unpacked archive: < 2,000
MAX_LOOSE_BYTES = 2 << 30  # one loose file or --from model file: the largest pinned object is 100 MB


def _fill_from_dir(root: Path, todo: dict[str, Wanted], cache: Cache) -> list[str]:
    # Loose files are recognised by their bytes, not their names: any layout works (a kept
    # /var/cache/apt/archives, a pip download directory, an unpacked archive). Walked by lstat:
    # symlinks, FIFOs and devices are never opened, and a file is hashed only if its size could match.
    filled: list[str] = []
    sizes = {w.size for w in todo.values() if w.size is not None}
    every_size_known = all(w.size is not None for w in todo.values())
    for path, st in _walk(root):  # the whole walk first: a directory over the cap stores nothing
        if (every_size_known and st.st_size not in sizes) or st.st_size > MAX_LOOSE_BYTES:
            continue  # cannot be any wanted object: skip hashing it
        digest = wire.sha256_regular(path, MAX_LOOSE_BYTES, error=BadInput, shown=str(path))
        if digest in todo and digest not in filled:
            store_file(cache, path, digest, name=entry_filename(todo[digest].entry))
            filled.append(digest)
    return filled


def store_file(cache: Cache, path: Path, sha256: str, *, name: str) -> None:
    """Store a stranger's file, read once more as a regular file within the cap (it may have been swapped since hashed)."""
    _store_checked(cache, wire.iter_chunks(path, MAX_LOOSE_BYTES, error=BadInput, shown=str(path)), sha256,
                   what=str(path), name=name)


def _walk(root: Path) -> list[tuple[Path, os.stat_result]]:
    """The regular files below root by lstat, sorted, symlinked directories not followed, at most MAX_LOOSE_FILES entries."""
    seen, stack, out = 0, [root], []
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = []
                for entry in it:
                    seen += 1
                    if seen > MAX_LOOSE_FILES:
                        raise BadInput(f"more than {MAX_LOOSE_FILES} entries", file=root, field="--from")
                    entries.append(entry)
        except OSError as e:
            raise BadInput(f"cannot list {d}: {e.strerror or e}", file=root, field="--from") from None
        for entry in sorted(entries, key=lambda e: e.name, reverse=True):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            elif stat.S_ISREG(st.st_mode):
                out.append((Path(entry.path), st))
    return out


def _fill_from_archive(archive: Path, todo: dict[str, Wanted], cache: Cache) -> list[str]:
    filled = []
    with tarscan.open_archive(archive) as a:
        for e in a.index.entries:
            if e.sha256 not in todo or e.sha256 in filled:
                continue
            m = a.member(e.path)
            if m is None:
                continue
            want = todo[e.sha256]
            what = f"{archive}: {m.name} ({want.entry})"
            # the lock, not the archive's own index, is the authority on the bytes
            if want.size is not None and m.size != want.size:
                raise IntegrityError(what, f"{e.sha256} ({want.size} bytes)", f"{m.size} bytes")
            _store_checked(cache, a.chunks(m), e.sha256, what=what, name=PurePosixPath(m.name).name)
            filled.append(e.sha256)
    return filled


def _store_checked(cache: Cache, chunks: Iterable[bytes], sha256: str, *, what: str, name: str) -> None:
    tmp = cache.subdir("tmp") / f"from-archive-{sha256}"
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise IntegrityError(what, sha256, h.hexdigest())
        cache.put_file(tmp, sha256, name=name)
    finally:
        tmp.unlink(missing_ok=True)


def _restore(archive: Path, under: str, out: Path) -> dict:
    """Write the members below ``under/`` into ``out``, each checked against the index first; the index.

    Nothing is written until every one is read and checked, and only below ``out``, in
    directories made here (``O_EXCL|O_NOFOLLOW``): a lying archive leaves no half-restored tree.
    """
    with tarscan.open_archive(archive) as a:
        files: dict[PurePosixPath, tuple[bytes, int]] = {}
        for e in a.index.entries:
            if not e.path.startswith(f"{under}/"):
                continue
            m = a.member(e.path)
            if m is None:
                continue
            what = f"{archive}: {m.name} ({e.entry})"
            if m.size > _MAX_RESTORED:
                raise IntegrityError(what, f"a file of at most {_MAX_RESTORED} bytes", f"{m.size} bytes")
            data = b"".join(a.chunks(m))
            actual = hashlib.sha256(data).hexdigest()
            if actual != e.sha256:
                raise IntegrityError(what, e.sha256, actual)
            files[PurePosixPath(e.path).relative_to(under)] = (data, e.mode if e.mode is not None else 0o644)
        clash = wire.collision(str(rel) for rel in files)
        if clash:
            raise UnsafeArchive(f"{archive}: members {clash[0]!r} and {clash[1]!r} collide after Unicode normalisation or case folding")
        index = {**a.index.model_dump(exclude_none=True), "_top": a.top}
    for rel, (data, mode) in sorted(files.items()):
        _write_new(out, rel, data, 0o755 if mode & 0o111 else 0o644)
    return index


def _write_new(out: Path, rel: PurePosixPath, data: bytes, mode: int) -> None:
    d = out
    d.mkdir(parents=True, exist_ok=True)
    for part in rel.parts[:-1]:
        d = d / part
        try:
            d.mkdir()
        except FileExistsError:
            if not stat.S_ISDIR(d.lstat().st_mode):
                raise UnsafeArchive(f"{rel}: passes through a non-directory") from None
    fd = os.open(d / rel.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        os.fchmod(f.fileno(), mode)  # not the umask's


_MAX_RESTORED = 64 << 20  # manifest, lock, a local model source, request-pack's source files: all small


def restore_sources(archive: Path, dest: Path) -> Path | None:
    """Unpack request-pack's own source (``request-pack/packager/...``) into ``dest``; its ``packager`` directory.

    None for an archive that carries none (made before archives carried it): the caller builds
    with its own checkout's harness then, and says so.
    """
    _restore(archive, SOURCE_DIR, Path(dest))
    root = Path(dest) / "packager"
    return root if (root / "__init__.py").is_file() else None


def restore_artifact(archive: Path, dest: Path) -> Path:
    """Unpack ``artifact/`` (manifest, lock, local sources) into ``dest/<name>``, each file checked against the index."""
    index = read_index(archive)
    out = Path(dest) / index["_top"]
    _restore(archive, "artifact", out)
    if not (out / LOCK_NAME).is_file() or not (out / MANIFEST_NAME).is_file():
        raise BadInput(f"holds no artifact/{MANIFEST_NAME} and artifact/{LOCK_NAME}", file=archive)
    if sha256_file(out / LOCK_NAME) != index["lock_sha256"]:
        raise IntegrityError(f"{archive}: artifact/{LOCK_NAME}", index["lock_sha256"], sha256_file(out / LOCK_NAME))
    return out
