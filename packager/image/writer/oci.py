"""Deterministic layer tarballs and OCI image layouts, written by hand.

Why not let an engine build: docker's classic builder stamps wall-clock times
and container ids, and each engine compresses differently. Writing the bytes
ourselves makes the digest a function of the inputs alone, so docker, podman
and Nix (which runs this module with the Debian python3 from the locked .debs)
get the same image index by construction.

This module imports only the standard library on purpose: the Nix builder has
no pydantic or packaging. The rules that make output stable:

- entries sorted by path components, parents first; paths relative, no ``./``;
- mtime clamped to ``epoch`` (SOURCE_DATE_EPOCH), numeric uid/gid, empty
  uname/gname, PAX format with headers only where ustar cannot hold a field;
- the tar bytes are GNU tar's (``write_tar``, ``GNU_TAR_OPTIONS``): headers are written
  by hand, not by ``tarfile``, whose ustar fields differ from GNU tar's in small ways
  (device fields of non-device entries, the extended header's mode and mtime, the ustar
  name of a non-ASCII path), so a second, independent writer can give the same bytes;
- hard links point at the first path of their group in sorted order;
- gzip with mtime 0, no file name, a fixed level; zlib's version is recorded
  by the caller because a different zlib may compress differently.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
GZIP_LEVEL = 6
TAR_FORMAT = "gnu-tar-pax/2"  # what write_tar writes; part of every layer cache key (a new format, new layers)
_CHUNK = 1 << 20

Opener = Callable[[], BinaryIO]


def zlib_version() -> str:
    return zlib.ZLIB_RUNTIME_VERSION


def canonical_json(obj: object) -> bytes:
    """The bytes we hash: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- layer entries -------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One file-system object of a layer. ``open`` yields the content of regular files."""

    path: str
    kind: str  # file, dir, symlink, hardlink, char, block, fifo
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    open: Opener | None = field(default=None, compare=False, repr=False)

    def sort_key(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
# Reading other tars: old-style and contiguous regular files are plain files to a layer.
KIND_OF_TAR_TYPE = {v: k for k, v in TAR_TYPES.items()} | {tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file"}


def clean_path(path: str) -> str:
    """Layer paths are relative and normalised; refuse anything that climbs out."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"path {path!r} escapes the layer root")
    return "/".join(parts)


def parent_dirs(paths: Iterable[str], *, mode: int = 0o755, mtime: int = 0) -> list[Entry]:
    """Directory entries for every ancestor of ``paths``, so layers never rely on implicit dirs."""
    seen: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            seen.add("/".join(parts[:i]))
    return [Entry(d, "dir", mode=mode, mtime=mtime) for d in sorted(seen)]


def normalise(entries: Iterable[Entry], epoch: int) -> list[Entry]:
    """Sort, clamp times, deduplicate (later wins) and re-aim hard links at the first path."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        p = clean_path(e.path)
        if not p:
            continue
        by_path[p] = replace(e, path=p, mtime=min(int(e.mtime), epoch), linkname=e.linkname)
    ordered = sorted(by_path.values(), key=Entry.sort_key)
    # A hard-link group shares content; after sorting its first member must carry it.
    target_of: dict[str, str] = {}
    for e in ordered:
        if e.kind == "hardlink":
            target = clean_path(e.linkname)
            if by_path.get(target) is None or by_path[target].kind != "file":
                raise ValueError(f"hard link {e.path} points at {target}, which is not a regular file of this layer")
            target_of[e.path] = target
            target_of[target] = target
    if not target_of:
        return ordered
    leader: dict[str, str] = {}
    for e in ordered:  # sorted, so the first member seen of each group leads it
        if e.path in target_of:
            leader.setdefault(target_of[e.path], e.path)
    out: list[Entry] = []
    for e in ordered:
        target = target_of.get(e.path)
        if target is None:
            out.append(e)
            continue
        src = by_path[target]
        if leader[target] == e.path:
            out.append(replace(src, path=e.path))
        else:
            out.append(replace(src, path=e.path, kind="hardlink", linkname=leader[target], size=0, open=None))
    return out


# --- writing a layer --------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """Pass-through writer that hashes and counts what goes by."""

    def __init__(self, sink: BinaryIO | None) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.sha.update(b)
        self.size += len(b)
        if self.sink is not None:
            self.sink.write(b)
        return len(b)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    platform: dict | None = None
    annotations: dict | None = None

    def to_json(self) -> dict:
        d: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            d["platform"] = self.platform
        if self.annotations:
            d["annotations"] = self.annotations
        return d

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str
    uncompressed_size: int
    entries: int


def write_tar(entries: list[Entry], out: BinaryIO, *, mtime_option: int | None = None) -> None:
    """Write already-normalised entries as a tar stream: exactly the bytes GNU tar writes for the same tree.

    GNU tar (1.34, Debian bookworm's) with ``GNU_TAR_OPTIONS`` over the same files in
    the same order writes these bytes; the Nix derivation uses it as the second
    implementation, and tests/unit/test_gnu_tar.py compares the two on every entry kind.
    ``mtime_option`` is GNU tar's ``--mtime`` (the epoch the entries were clamped to): GNU tar dates
    an extended header with it when given, with the member's own mtime otherwise.
    """
    written = 0
    for e in entries:
        head = tar_header(e, mtime_option)
        out.write(head)
        written += len(head)
        if e.kind == "file":
            if e.open is None:
                raise ValueError(f"{e.path}: regular file without content")
            with e.open() as src:
                _copy_exact(src, out, e.size, e.path)
            pad = -e.size % _BLOCK
            out.write(b"\0" * pad)
            written += e.size + pad
    # the end: two zero blocks, then zeros to a whole record of 20 blocks (GNU tar's default blocking factor)
    end = 2 * _BLOCK + (-(written + 2 * _BLOCK) % _RECORD)
    out.write(b"\0" * end)


# GNU tar's options for the same bytes (``tar --create --no-recursion --null --files-from=LIST``, the
# list in ``normalise`` order, mtimes already clamped or given by --mtime/--clamp-mtime; a tree staged
# by an unprivileged builder adds --owner=0 --group=0, as every file of our file layers is root's):
GNU_TAR_OPTIONS = ("--format=pax", "--numeric-owner", "--pax-option=exthdr.name=././@PaxHeader,delete=atime,delete=ctime")
_BLOCK, _RECORD = 512, 20 * 512
_TYPEFLAG = {"file": b"0", "hardlink": b"1", "symlink": b"2", "char": b"3", "block": b"4", "dir": b"5", "fifo": b"6"}
_NAME_FIELD = 100


def _octal(value: int, width: int, what: str) -> bytes:
    digits = b"%0*o" % (width - 1, value)
    if value < 0 or len(digits) > width - 1:
        raise ValueError(f"{what} {value} does not fit a ustar field (GNU tar would need a pax record)")
    return digits + b"\0"


def _ustar(name: bytes, typeflag: bytes, *, mode: int, uid: int, gid: int, size: int, mtime: int,
           linkname: bytes = b"", devices: tuple[int, int] | None = (0, 0)) -> bytes:
    h = bytearray(_BLOCK)
    h[0:100] = name[:_NAME_FIELD].ljust(100, b"\0")
    h[100:108] = _octal(mode, 8, "mode")
    h[108:116] = _octal(uid, 8, "uid")
    h[116:124] = _octal(gid, 8, "gid")
    h[124:136] = _octal(size, 12, "size")
    h[136:148] = _octal(mtime, 12, "mtime")
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:257] = linkname[:_NAME_FIELD].ljust(100, b"\0")
    h[257:265] = b"ustar\x0000"
    if devices is not None:  # GNU tar fills them in every header but its extended ones
        h[329:337] = _octal(devices[0], 8, "devmajor")
        h[337:345] = _octal(devices[1], 8, "devminor")
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("ascii") + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n += 1
    return b"%d" % n + body


def tar_header(e: Entry, mtime_option: int | None = None) -> bytes:
    """The header block(s) of one entry: a pax extended header first when a name does not fit ustar.

    The extended header's mtime is ``mtime_option`` (GNU tar's ``--mtime``) when given, not the
    member's clamped mtime: an old file with a long name (resnet-tvm's C++ headers) showed it."""
    name = (e.path + ("/" if e.kind == "dir" else "")).encode("utf-8")
    link = e.linkname.encode("utf-8")
    records = b""
    if len(name) > _NAME_FIELD or not name.isascii():
        records += _pax_record("path", name)
    if len(link) > _NAME_FIELD or not link.isascii():
        records += _pax_record("linkpath", link)
    size = e.size if e.kind == "file" else 0
    head = _ustar(name, _TYPEFLAG[e.kind], mode=e.mode & 0o7777, uid=e.uid, gid=e.gid, size=size,
                  mtime=int(e.mtime), linkname=link, devices=(e.devmajor, e.devminor))
    if not records:
        return head
    ext = _ustar(b"././@PaxHeader", b"x", mode=0o644, uid=0, gid=0, size=len(records),
                 mtime=int(e.mtime if mtime_option is None else mtime_option), devices=None)
    return ext + records + b"\0" * (-len(records) % _BLOCK) + head


def _copy_exact(src: BinaryIO, out: BinaryIO, size: int, what: str) -> None:
    left = size
    while left:
        chunk = src.read(min(left, _CHUNK))
        if not chunk:
            raise OSError(f"{what}: file shorter than its recorded size")
        out.write(chunk)
        left -= len(chunk)


@dataclass(frozen=True)
class TarGz:
    """What ``write_tar_gz`` wrote: the hashes and sizes of the compressed and the plain stream."""

    sha256: str
    size: int
    plain_sha256: str
    plain_size: int
    entries: int


def write_tar_gz(entries: Iterable[Entry], out: BinaryIO, epoch: int, *, level: int = GZIP_LEVEL) -> TarGz:
    """Normalise, tar and gzip ``entries`` into ``out``: the one deterministic tar writer (layers and bundles)."""
    ordered = normalise(entries, epoch)
    compressed = _HashingWriter(out)
    with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=compressed, mtime=0) as gz:
        plain = _HashingWriter(gz)  # type: ignore[arg-type]
        write_tar(ordered, plain, mtime_option=epoch)  # type: ignore[arg-type]
    return TarGz(compressed.sha.hexdigest(), compressed.size, plain.sha.hexdigest(), plain.size, len(ordered))


def write_layer(entries: Iterable[Entry], blobs: Path, epoch: int, *, level: int = GZIP_LEVEL) -> Layer:
    """Normalise, tar, gzip and store a layer under ``blobs/sha256``; return its descriptor."""
    blobs = Path(blobs)
    blobs.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    try:
        with os.fdopen(fd, "wb") as raw:
            tgz = write_tar_gz(entries, raw, epoch, level=level)
        os.replace(tmp, blobs / tgz.sha256)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    desc = Descriptor(MT_LAYER_GZIP, "sha256:" + tgz.sha256, tgz.size)
    return Layer(desc, "sha256:" + tgz.plain_sha256, tgz.plain_size, tgz.entries)


def write_file(path: Path, data: bytes) -> None:
    """Write through a temporary name and rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def readable_json(obj: object) -> bytes:
    """The bytes of a document people read (record, plan, SBOM): indented, sorted, so still stable."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_blob(blobs: Path, data: bytes, media_type: str, **kw) -> Descriptor:
    digest = hashlib.sha256(data).hexdigest()
    blobs = Path(blobs)
    blobs.mkdir(parents=True, exist_ok=True)
    if not (blobs / digest).exists():
        write_file(blobs / digest, data)
    return Descriptor(media_type, "sha256:" + digest, len(data), **kw)


# --- image documents -----------------------------------------------------------------------


def platform_json(os_: str, architecture: str, variant: str | None) -> dict:
    p = {"os": os_, "architecture": architecture}
    if variant:
        p["variant"] = variant
    return p


def image_config(platform: dict, diff_ids: list[str], config: dict, history: list[dict], epoch: int) -> bytes:
    doc = {
        **platform,
        "created": rfc3339(epoch),
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": rfc3339(epoch), **h} for h in history],
    }
    return canonical_json(doc)


def image_manifest(config: Descriptor, layers: list[Descriptor], annotations: dict | None = None) -> bytes:
    doc: dict = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    if annotations:
        doc["annotations"] = annotations
    return canonical_json(doc)


def image_index(manifests: list[Descriptor], annotations: dict | None = None) -> bytes:
    doc: dict = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [m.to_json() for m in manifests]}
    if annotations:
        doc["annotations"] = annotations
    return canonical_json(doc)


def write_layout(root: Path, index: Descriptor, tag: str) -> None:
    """``oci-layout`` and a top-level ``index.json`` naming the image index by ``tag``."""
    root = Path(root)
    (root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    top = {"schemaVersion": 2, "manifests": [replace(index, annotations={REF_NAME: tag}).to_json()]}
    (root / "index.json").write_bytes(canonical_json(top))


def blob_path(root: Path, digest: str) -> Path:
    algo, hexd = digest.split(":", 1)
    return Path(root) / "blobs" / algo / hexd


def read_json_blob(root: Path, digest: str) -> dict:
    return json.loads(blob_path(root, digest).read_bytes())


def link_or_copy(src: Path, dst: Path) -> None:
    """Blobs are immutable, so a hard link is as good as a copy and costs nothing."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# --- comparing two layers (for --check diagnostics) -------------------------------------------


@dataclass(frozen=True)
class Difference:
    path: str
    what: str  # content, mtime, mode, owner, type, link, only-in-first, only-in-second

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def _members(blob: Path) -> Iterator[tuple[tarfile.TarInfo, str | None]]:
    with tarfile.open(blob, mode="r|*") as tar:  # layer blobs (gzip) and plain rootfs tars alike
        for m in tar:
            digest = None
            if m.isfile():
                f = tar.extractfile(m)
                h = hashlib.sha256()
                while chunk := f.read(_CHUNK):  # type: ignore[union-attr]
                    h.update(chunk)
                digest = h.hexdigest()
            yield m, digest


def first_difference(blob_a: Path, blob_b: Path) -> Difference | None:
    """Walk two layer blobs in step and name the first entry that differs, and how."""
    it_a, it_b = _members(blob_a), _members(blob_b)
    while True:
        a, b = next(it_a, None), next(it_b, None)
        if a is None and b is None:
            return None
        if a is None:
            return Difference(b[0].name, "only in second build")  # type: ignore[index]
        if b is None:
            return Difference(a[0].name, "only in first build")
        (ma, da), (mb, db) = a, b
        if ma.name != mb.name:
            first = min(ma.name, mb.name)
            return Difference(first, "only in first build" if first == ma.name else "only in second build")
        checks = [
            ("type", ma.type, mb.type),
            ("content", da, db),
            ("size", ma.size, mb.size),
            ("mode", oct(ma.mode), oct(mb.mode)),
            ("owner", (ma.uid, ma.gid, ma.uname, ma.gname), (mb.uid, mb.gid, mb.uname, mb.gname)),
            ("mtime", ma.mtime, mb.mtime),
            ("link", ma.linkname, mb.linkname),
            ("pax headers", sorted(ma.pax_headers.items()), sorted(mb.pax_headers.items())),
        ]
        for what, x, y in checks:
            if x != y:
                return Difference(ma.name, f"{what} differs ({x} vs {y})")
