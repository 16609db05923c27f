"""Deterministic .tar.gz packing of a bundle directory, and unpacking that
refuses anything a hostile archive could use to escape or exhaust the target.

Same directory in, same bytes out: the tar is written by the image layers' writer
(``packager.image.writer.oci``: entries sorted, owners 0/0 with no names, gzip
header without name or time), with modes normalised and every mtime
SOURCE_DATE_EPOCH (default 0).
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from packager import wire
from packager.errors import BadInput, UnsafeArchive
from packager.image.writer import oci

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
# Caps (README, "Caps"): a 50,000-image bundle holds ~25 files, predictions.jsonl of
# ~10.5 MB (the largest), labels.tsv ~2.6 MB, LoadGen's accuracy log ~3.3 MB and
# qsl_ids.tsv ~3 MB; about 20 MB in all, 5.5 MB packed (ratio 3.7:1).
DEFAULT_MAX_ENTRY_BYTES = 64 << 20  # one file: 6x the largest real one
DEFAULT_MAX_TOTAL_BYTES = 256 << 20  # all files: 12x
DEFAULT_MAX_ENTRIES = 4096  # files and directories: 100x
DEFAULT_MAX_ARCHIVE_BYTES = 256 << 20  # the .tar.gz itself
DEFAULT_MAX_RATIO = 100  # unpacked / packed bytes; real bundles 3-10, a gzip bomb ~1000
DEFAULT_MAX_EXT_HEADER_BYTES = 64 << 10  # one pax or GNU long-name header: a long path and a few keys
BUNDLE_GZIP_LEVEL = 9  # bundles are shipped and stored, and are small: smallest wins over fastest


def _epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        epoch = int(value)
    except ValueError as e:
        raise BadInput(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from e
    if epoch < 0:
        raise BadInput(f"SOURCE_DATE_EPOCH={value!r} is negative")
    return epoch


@dataclass(frozen=True)
class Tree:
    """A bundle directory as seen by lstat: what may be packed, signed or verified, and what may not."""

    files: dict[str, Path]  # relative POSIX path -> path, regular files only
    dirs: tuple[str, ...]
    others: tuple[str, ...]  # symlinks, devices, FIFOs, sockets: never part of a bundle


def scan_tree(root: Path, limits: "Limits | None" = None, *, error: wire.Refuse = UnsafeArchive) -> Tree:
    """Walk ``root`` by lstat only, within the caps: entry count, per-file and total size,
    name rules (NFC, length, depth, no collision after normalisation or case folding).

    Nothing is opened or followed, so a hostile directory costs at most
    ``max_entries`` lstat calls before it is refused.
    """
    limits = limits or Limits()
    files: dict[str, Path] = {}
    dirs: list[str] = []
    others: list[str] = []
    total = 0
    stack = [""]
    while stack:
        base = stack.pop()
        try:
            with os.scandir(root / base if base else root) as it:
                entries = []
                for entry in it:  # lazily: a directory of 200,000 files is refused after max_entries
                    entries.append(entry)
                    if len(entries) + len(files) + len(dirs) + len(others) > limits.max_entries:
                        raise error(f"{root}: more than {limits.max_entries} entries")
            entries.sort(key=lambda e: e.name)
        except OSError as e:
            raise error(f"{root}: cannot list {base or '.'}: {e.strerror or e}") from None
        for entry in entries:
            rel = f"{base}/{entry.name}" if base else entry.name
            wire.check_name(rel, error=error, shown=str(root))
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                raise error(f"{root}/{rel}: cannot stat: {e.strerror or e}") from None
            if stat.S_ISREG(st.st_mode):
                wire.check_size(st.st_size, limits.max_entry_bytes, error=error, shown=f"{root}/{rel}")
                total += st.st_size
                if total > limits.max_total_bytes:
                    raise error(f"{root}: more than {limits.max_total_bytes} bytes in all")
                files[rel] = Path(entry.path)
            elif stat.S_ISDIR(st.st_mode):
                dirs.append(rel)
                stack.append(rel)
            else:
                others.append(rel)
    clash = wire.collision([*files, *dirs, *others])
    if clash:
        raise error(f"{root}: names {clash[0]!r} and {clash[1]!r} collide after Unicode normalisation or case folding")
    return Tree(dict(sorted(files.items())), tuple(sorted(dirs)), tuple(sorted(others)))


def _entries(root: Path, epoch: int) -> list[oci.Entry]:
    """Every directory and regular file below root as tar entries; anything else is refused."""
    tree = scan_tree(root, error=BadInput)
    if tree.others:
        raise BadInput("is a symlink or special file; a bundle holds regular files only", file=root / tree.others[0])
    dirs = [oci.Entry(rel, "dir", mode=0o755, mtime=epoch) for rel in tree.dirs]
    files = [oci.Entry(rel, "file", mode=0o755 if os.access(p, os.X_OK) else 0o644, mtime=epoch,
                       size=p.stat().st_size, open=lambda p=p: p.open("rb"))
             for rel, p in tree.files.items()]
    return dirs + files


def pack(src: Path, dest: Path) -> Path:
    """Write ``src``'s tree to ``dest`` (.tar.gz); byte-identical for identical trees."""
    if not src.is_dir():
        raise BadInput("not a directory", file=src)
    epoch = _epoch()
    entries = _entries(src, epoch)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        with tmp.open("wb") as raw:
            oci.write_tar_gz(entries, raw, epoch, level=BUNDLE_GZIP_LEVEL)
    except OSError as e:  # a file shrank or vanished while packing: the bundle would not match its subjects
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot pack: {e}", file=src) from e
    tmp.replace(dest)
    log.info("packed %s -> %s", src, dest)
    return dest


@dataclass(frozen=True)
class Limits:
    """What a bundle may hold; chosen from a real 50,000-image bundle with margin (see README, "Caps")."""

    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    max_ratio: int = DEFAULT_MAX_RATIO
    max_ext_header_bytes: int = DEFAULT_MAX_EXT_HEADER_BYTES


def _safe_name(name: str) -> PurePosixPath:
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"entry {name!r}: empty name, NUL or backslash")
    if name.startswith("/"):
        raise UnsafeArchive(f"entry {name!r}: absolute path")
    path = PurePosixPath(name)
    if any(part == ".." for part in path.parts):
        raise UnsafeArchive(f"entry {name!r}: '..' path component")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise UnsafeArchive(f"entry {name!r}: names the archive root")
    rel = PurePosixPath(*parts)
    wire.check_name(rel.as_posix(), error=UnsafeArchive, shown="archive entry")
    return rel


def _kind(m: tarfile.TarInfo) -> str | None:
    if m.issym():
        return f"symlink to {m.linkname!r}"
    if m.islnk():
        return f"hard link to {m.linkname!r}"
    if m.ischr() or m.isblk():
        return "device file"
    if m.isfifo():
        return "FIFO"
    if m.issparse() or m.type == tarfile.GNUTYPE_SPARSE:
        return "sparse file"
    if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        return f"unsupported entry type {m.type!r}"
    return None


# --- pass 1: the raw stream -------------------------------------------------------------
# Written by hand because tarfile reads a pax or GNU long-name header whole into
# memory before any hook sees it, treats GNU sparse members as regular files, and
# (like gzip) ignores what follows the end-of-archive marker. This pass reads the
# decompressed stream block by block, with zlib directly, and checks every header
# (with tarfile's own parser, TarInfo.frombuf) before tarfile touches the archive.

_BLOCK = tarfile.BLOCKSIZE
_ZERO_BLOCK = bytes(_BLOCK)
_EXT_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_MAX_PADDING = 64 << 10  # zeros after the end-of-archive blocks: one tar record (10 KiB by default, at most 64 KiB)


class _Gunzip:
    """One gzip member, decompressed on demand, bounded in output and ratio; nothing may follow it."""

    def __init__(self, f: BinaryIO, name: str, compressed: int, limits: Limits) -> None:
        self.f, self.name, self.limits = f, name, limits
        self.z = zlib.decompressobj(wbits=31)  # gzip wrapper only
        self.buf = b""
        self.out = 0
        # Bounded by both: the total cap, and the ratio to this file's compressed size.
        self.budget = min(limits.max_total_bytes + (2 << 20), max(limits.max_ratio * compressed, 1 << 20))

    def _fill(self, need: int) -> None:
        while len(self.buf) < need:
            if self.z.eof:
                raise UnsafeArchive(f"{self.name}: truncated archive (gzip stream ends inside the tar)")
            data = self.z.unconsumed_tail or self.f.read(1 << 16)
            if not data:
                raise UnsafeArchive(f"{self.name}: truncated or corrupt gzip stream (ends early)")
            try:
                block = self.z.decompress(data, 1 << 20)
            except zlib.error as e:
                raise UnsafeArchive(f"{self.name}: truncated or corrupt gzip stream ({e})") from None
            self.out += len(block)
            if self.out > self.budget:
                raise UnsafeArchive(
                    f"{self.name}: decompresses past {self.budget} bytes (more than {self.limits.max_total_bytes} bytes "
                    f"unpacked, or a compression ratio over {self.limits.max_ratio}:1: a gzip bomb?)")
            self.buf += block
            if self.z.eof:
                self._check_end()

    def _check_end(self) -> None:
        if self.z.unused_data or self.f.read(1):
            raise UnsafeArchive(f"{self.name}: data after the end of the gzip stream (a second member or appended bytes)")

    def read(self, n: int) -> bytes:
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def skip(self, n: int) -> None:
        while n:
            step = min(n, 1 << 20)
            self.read(step)
            n -= step

    def rest_is_padding(self) -> None:
        """After the end-of-archive block: only zeros, at most one record, then the gzip end."""
        while not self.z.eof:
            if len(self.buf) > _MAX_PADDING:
                break
            try:
                self._fill(len(self.buf) + 1)
            except UnsafeArchive:
                if self.z.eof:
                    break
                raise
        if len(self.buf) > _MAX_PADDING or self.buf.strip(b"\0"):
            raise UnsafeArchive(f"{self.name}: data after the tar end-of-archive marker")


def _pax_records(data: bytes, name: str) -> dict[str, str]:
    """The records of a pax extended header (``"%d %s=%s\\n"``), refusing a malformed one."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos:].strip(b"\0"):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise UnsafeArchive(f"{name}: malformed pax extended header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise UnsafeArchive(f"{name}: malformed pax extended header")
        key, value = record[:-1].split(b"=", 1)
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


@dataclass(frozen=True)
class _Member:
    rel: PurePosixPath | None  # None: the archive root ("./")
    type: bytes
    size: int


def _scan(f: BinaryIO, name: str, compressed: int, limits: Limits) -> list[_Member]:
    """Every member (safe relative name, type, size) from the raw stream, or the first reason to refuse.

    All names are checked here, so nothing is written for an archive that has a bad one.
    """
    z = _Gunzip(f, name, compressed, limits)
    members: list[_Member] = []
    seen: set[PurePosixPath] = set()
    extended = 0
    total = 0
    override: str | None = None  # the next member's name from a pax or GNU long-name header
    while True:
        block = z.read(_BLOCK)
        if len(block) < _BLOCK:
            raise UnsafeArchive(f"{name}: truncated archive (a header is cut off)")
        if block == _ZERO_BLOCK:
            if override is not None:
                raise UnsafeArchive(f"{name}: an extended header with no member after it")
            z.rest_is_padding()
            break
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise UnsafeArchive(f"{name}: not a valid tar archive ({e} at member {len(members) + 1})") from None
        data_blocks = -(-info.size // _BLOCK) * _BLOCK
        if info.type in _EXT_TYPES:
            extended += 1
            if extended > limits.max_entries:
                raise UnsafeArchive(f"{name}: more than {limits.max_entries} extended headers")
            if info.size > limits.max_ext_header_bytes:
                raise UnsafeArchive(f"{name}: extended header of {info.size} bytes before member {len(members) + 1}, "
                                    f"over the {limits.max_ext_header_bytes}-byte limit")
            payload = z.read(data_blocks)[: info.size]
            if info.type == tarfile.GNUTYPE_LONGNAME:
                override = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                pax = _pax_records(payload, name)
                bad = next((k for k in pax if k == "size" or k.startswith("GNU.sparse")
                            or (info.type == tarfile.XGLTYPE and k in ("path", "linkpath"))), None)
                if bad:
                    raise UnsafeArchive(f"{name}: pax header sets {bad!r} (not something a bundle needs)")
                if "path" in pax and info.type == tarfile.XHDTYPE:
                    override = pax["path"]
            continue
        member_name = override if override is not None else info.name
        override = None
        kind = _kind(info)
        if kind:
            raise UnsafeArchive(f"entry {member_name!r}: {kind} not allowed in a bundle")
        if len(members) >= limits.max_entries:
            raise UnsafeArchive(f"{name}: more than {limits.max_entries} entries")
        if info.size > limits.max_entry_bytes:
            raise UnsafeArchive(f"entry {member_name!r}: {info.size} bytes exceeds the {limits.max_entry_bytes} byte limit")
        total += info.size
        if total > limits.max_total_bytes:
            raise UnsafeArchive(f"{name}: more than {limits.max_total_bytes} bytes unpacked")
        rel = None if info.isdir() and member_name.strip("/") in ("", ".") else _safe_name(member_name)
        if rel is not None:
            if rel in seen:
                raise UnsafeArchive(f"entry {member_name!r}: duplicate entry")
            seen.add(rel)
        members.append(_Member(rel, info.type, info.size))
        z.skip(data_blocks)
    clash = wire.collision(m.rel.as_posix() for m in members if m.rel is not None)
    if clash:
        raise UnsafeArchive(f"entries {clash[0]!r} and {clash[1]!r} collide after Unicode normalisation or case folding")
    return members


# --- pass 2: extraction, member by member, as pass 1 saw them -------------------------------


def _extract_all(tar: tarfile.TarFile, root: Path, scanned: list[_Member], shown: str) -> None:
    expected = iter(scanned)
    while (m := tar.next()) is not None:
        want = next(expected, None)
        rel = None if m.isdir() and m.name.strip("/") in ("", ".") else _safe_name(m.name)
        if want is None or (rel, m.type, m.size) != (want.rel, want.type, want.size) or _kind(m):
            # tarfile read a header differently from pass 1: refuse rather than guess which is right.
            raise UnsafeArchive(f"entry {m.name!r}: tar headers read two ways disagree")
        if rel is None:
            continue  # "./" as written by `tar -C dir .`: the target itself
        try:
            tarfile.data_filter(m, str(root))  # the stdlib's own rules for untrusted archives, as a second opinion
        except tarfile.FilterError as e:
            raise UnsafeArchive(f"entry {m.name!r}: {e}") from None
        _extract(tar, m, rel, root, shown)
    if next(expected, None) is not None:
        raise UnsafeArchive(f"{shown}: tar headers read two ways disagree (tarfile saw fewer members)")


def safe_unpack(archive: Path, dest: Path, limits: Limits = Limits()) -> Path:
    """Unpack a bundle .tar.gz into the empty directory ``dest``; every entry is checked first.

    Pass 1 reads the raw stream (headers, names, sizes, counts, extended headers,
    compression ratio, end marker) before tarfile parses anything or anything is
    written; pass 2 extracts with tarfile, refusing any member it reads differently.
    Files are created with O_EXCL|O_NOFOLLOW below directories we created
    ourselves, so even a check we forgot could not write outside ``dest``.
    """
    shown = archive.name
    with wire.open_regular(archive, limits.max_archive_bytes, error=UnsafeArchive, shown=shown) as f:
        magic = f.read(2)
        if magic != GZIP_MAGIC:
            raise UnsafeArchive(f"{shown}: not a gzip file (magic {magic.hex() or 'empty'})")
        f.seek(0)
        scanned = _scan(f, shown, os.fstat(f.fileno()).st_size, limits)
        f.seek(0)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise BadInput("unpack target is not empty", file=dest)
        root = dest.resolve()
        try:
            with tarfile.open(fileobj=f, mode="r|gz") as tar:
                _extract_all(tar, root, scanned, shown)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise UnsafeArchive(f"{shown}: truncated or corrupt gzip stream ({e})") from None
        except tarfile.ReadError as e:
            raise UnsafeArchive(f"{shown}: not a valid tar archive ({e})") from None
        except FileExistsError as e:
            raise UnsafeArchive(f"{shown}: entry collides with an existing path ({e.filename})") from None
        except OSError as e:
            raise UnsafeArchive(f"{shown}: cannot unpack: {e.strerror or e}") from None
    log.debug("unpacked %d entries from %s", len(scanned), archive)
    return dest


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, rel: PurePosixPath, root: Path, shown: str) -> None:
    target = root.joinpath(*rel.parts)
    _mkdirs(root, target.parent)
    if m.isdir():
        _mkdirs(root, target)
        return
    src = tar.extractfile(m)
    assert src is not None  # regular file, checked above
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        remaining = m.size
        while remaining:
            block = src.read(min(remaining, 1 << 20))
            if not block:
                raise UnsafeArchive(f"{shown}: truncated inside entry {m.name!r}")
            out.write(block)
            remaining -= len(block)


def _mkdirs(root: Path, d: Path) -> None:
    """mkdir -p that refuses to walk through anything but real directories under root."""
    rel = d.relative_to(root)
    cur = root
    for part in rel.parts:
        cur = cur / part
        try:
            st = cur.lstat()
        except FileNotFoundError:
            cur.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeArchive(f"entry path {rel.as_posix()!r} passes through a non-directory")
