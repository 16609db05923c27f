"""Reading an inputs archive (``request-pack archive``) that a stranger handed over: headers first, bounded.

The archive is a plain tar (its .debs, wheels and model are compressed already),
so every header can be read by seeking, without reading any member's data:
:func:`open_archive` walks all headers once before anything is parsed as JSON or
stored, and refuses, in one line naming the archive and the rule (exit 16,
like a hostile bundle archive): a compressed file, a truncated header or
member, data after the end-of-archive marker, an oversized or malformed pax or
GNU long-name header, any member but a regular file or a directory (links,
devices, FIFOs, sparse files), unsafe or duplicate names, more than
``MAX_MEMBERS`` members. Then ``index.json`` is read under its cap with the
strict JSON reader (``wire.loads``) and checked against the headers: every
entry names a regular member of exactly its size, and every member is named.

Members are later read from the offsets this scan recorded, never through
``tarfile``'s own reader, so a header that two parsers read differently
cannot smuggle a member in. The sha256 of a member is checked when it is
read (against the lock for cache objects, against the index for restored
files): an index that lies about one is refused then, naming the entry.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import Field, ValidationError

from packager import wire
from packager.errors import BadInput, UnsafeArchive

ARCHIVE_VERSION = 1
INDEX_NAME = "index.json"
# The largest real archive (efficientnet-lite0: 422 pinned objects over four platforms, ~100 source
# files and their directories) has under 1,000 members and a few GB; the caps leave 8x and more.
MAX_ARCHIVE_BYTES = 64 << 30
MAX_MEMBERS = 8192
MAX_INDEX_BYTES = 16 << 20
MAX_EXT_HEADER_BYTES = 64 << 10  # one pax or GNU long-name header: a long path and a few keys
_MAX_PADDING = 64 << 10  # zeros after the end-of-archive blocks: one tar record (10 KiB by default)
_BLOCK = tarfile.BLOCKSIZE
_ZERO = bytes(_BLOCK)
_EXT_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_SHA256 = r"^[0-9a-f]{64}$"


class IndexEntry(wire.WireModel):
    entry: str = Field(max_length=4096)
    sha256: str = Field(pattern=_SHA256)
    size: int = Field(ge=0)
    path: str = Field(max_length=wire.PATH_MAX_BYTES)
    mode: int | None = Field(default=None, ge=0, le=0o7777)


class Index(wire.WireModel):
    archive_version: int
    artifact: str = Field(max_length=255)
    manifest_sha256: str = Field(pattern=_SHA256)
    lock_sha256: str = Field(pattern=_SHA256)
    platforms: list[str] = Field(max_length=64)
    entries: list[IndexEntry] = Field(max_length=MAX_MEMBERS * 4)
    recipe_tools: list[str] = Field(default_factory=list, max_length=256)


@dataclass(frozen=True)
class Member:
    name: str  # normalised: no leading "./", no trailing "/"
    size: int
    offset: int  # of its data in the file
    is_dir: bool


@dataclass(frozen=True)
class Archive:
    """An open, scanned archive: its headers, its checked index and its top directory."""

    file: BinaryIO
    shown: str
    members: dict[str, Member]
    index: Index
    top: str

    def member(self, path: str) -> Member | None:
        """The regular member at an index entry's ``path`` (the scan checked its size), or None in a partial archive."""
        return self.members.get(f"{self.top}/{path}")

    def chunks(self, m: Member, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The member's bytes, read from the offset the scan recorded (the file cannot shrink: we hold it open)."""
        self.file.seek(m.offset)
        left = m.size
        while left:
            block = self.file.read(min(left, chunk))
            if not block:
                raise UnsafeArchive(f"{self.shown}: truncated inside member {m.name!r} (the file shrank while read)")
            left -= len(block)
            yield block


def looks_like_archive(path: Path) -> bool:
    """A regular file that starts like a tar or a compressed file (which ``open_archive`` then refuses in one line)."""
    try:
        with wire.open_regular(path, MAX_ARCHIVE_BYTES, error=BadInput, shown=str(path)) as f:
            head = f.read(_BLOCK)
    except BadInput:
        return False
    if any(head.startswith(magic) for magic in _COMPRESSED) or head[257:262] == b"ustar":
        return True
    return path.name.endswith((".tar", ".tar.gz", ".tgz"))


@contextmanager
def open_archive(path: Path) -> Iterator[Archive]:
    shown = str(path)
    with wire.open_regular(Path(path), MAX_ARCHIVE_BYTES, error=UnsafeArchive, shown=shown) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(6)
        kind = next((k for magic, k in _COMPRESSED.items() if head.startswith(magic)), None)
        if kind:
            raise UnsafeArchive(f"{shown}: a {kind}-compressed file; `request-pack archive` writes a plain tar")
        members = _scan(f, shown, size)
        index, top = _read_index(f, shown, members)
        yield Archive(f, shown, members, index, top)


def _scan(f: BinaryIO, shown: str, size: int) -> dict[str, Member]:
    members: dict[str, Member] = {}
    pos, extended = 0, 0
    override: str | None = None  # the next member's name, from a pax or GNU long-name header
    while True:
        if pos + _BLOCK > size:
            raise UnsafeArchive(f"{shown}: truncated archive (a header is cut off at byte {pos})")
        f.seek(pos)
        block = f.read(_BLOCK)
        if block == _ZERO:
            if override is not None:
                raise UnsafeArchive(f"{shown}: an extended header with no member after it")
            _only_padding(f, shown, pos, size)
            break
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise UnsafeArchive(f"{shown}: not a valid tar archive ({e} at byte {pos})") from None
        if info.size < 0:
            raise UnsafeArchive(f"{shown}: member at byte {pos} declares a negative size")
        data, end = pos + _BLOCK, pos + _BLOCK + -(-info.size // _BLOCK) * _BLOCK
        if end > size:
            raise UnsafeArchive(f"{shown}: truncated archive (a member at byte {pos} declares {info.size} bytes, "
                                f"the file ends first)")
        pos = end
        if info.type in _EXT_TYPES:
            extended += 1
            if extended > MAX_MEMBERS:
                raise UnsafeArchive(f"{shown}: more than {MAX_MEMBERS} extended headers")
            if info.size > MAX_EXT_HEADER_BYTES:
                raise UnsafeArchive(f"{shown}: extended header of {info.size} bytes at byte {data - _BLOCK}, "
                                    f"over the {MAX_EXT_HEADER_BYTES}-byte limit")
            f.seek(data)
            payload = f.read(info.size)
            if info.type == tarfile.GNUTYPE_LONGNAME:
                override = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                override = _pax(payload, shown, glob=info.type == tarfile.XGLTYPE) or override
            continue
        name, override = (override if override is not None else info.name), None
        kind = _kind(info)
        if kind:
            raise UnsafeArchive(f"{shown}: member {_cut(name)} is a {kind}; an inputs archive holds regular files and directories only")
        rel = _safe_name(name, shown)
        if rel in members:
            raise UnsafeArchive(f"{shown}: member {_cut(rel)} appears twice")
        if len(members) >= MAX_MEMBERS:
            raise UnsafeArchive(f"{shown}: more than {MAX_MEMBERS} members")
        members[rel] = Member(rel, 0 if info.isdir() else info.size, data, info.isdir())
    return members


def _only_padding(f: BinaryIO, shown: str, pos: int, size: int) -> None:
    """After the first zero block: zeros to the end of the file, at most one record of them."""
    rest = size - pos
    f.seek(pos)
    if rest > _MAX_PADDING or f.read(rest).strip(b"\0"):
        raise UnsafeArchive(f"{shown}: data after the tar end-of-archive marker (byte {pos})")


def _pax(data: bytes, shown: str, *, glob: bool) -> str | None:
    """The path a pax header sets for the next member, refusing a malformed header or keys we do not honour."""
    path, pos = None, 0
    while pos < len(data) and data[pos:].strip(b"\0"):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[space + 1: pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise UnsafeArchive(f"{shown}: malformed pax extended header")
        key, value = record[:-1].split(b"=", 1)
        if key == b"size" or key.startswith(b"GNU.sparse") or (glob and key in (b"path", b"linkpath")):
            raise UnsafeArchive(f"{shown}: pax header sets {_cut(key.decode('utf-8', 'replace'))} (not something an archive needs)")
        if key == b"path":
            path = value.decode("utf-8", "surrogateescape")
        pos += length
    return path


def _kind(m: tarfile.TarInfo) -> str | None:
    if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        return None
    kinds = {tarfile.SYMTYPE: f"symlink to {_cut(m.linkname)}", tarfile.LNKTYPE: f"hard link to {_cut(m.linkname)}",
             tarfile.CHRTYPE: "device file", tarfile.BLKTYPE: "device file", tarfile.FIFOTYPE: "FIFO",
             tarfile.GNUTYPE_SPARSE: "sparse file"}
    return kinds.get(m.type, f"member of unsupported type {m.type!r}")


def _safe_name(name: str, shown: str) -> str:
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise UnsafeArchive(f"{shown}: member {_cut(name)}: empty, absolute, or holds a NUL or backslash")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts or not parts:
        raise UnsafeArchive(f"{shown}: member {_cut(name)}: a '..' component, or names the archive root")
    rel = "/".join(parts)
    wire.check_name(rel, error=UnsafeArchive, shown=shown)
    return rel


def _read_index(f: BinaryIO, shown: str, members: dict[str, Member]) -> tuple[Index, str]:
    tops = {name.split("/", 1)[0] for name in members}
    index_at = [name for name in members if name.split("/")[1:] == [INDEX_NAME]]
    if len(index_at) != 1 or len(tops) != 1:
        raise BadInput(f"not a request-pack archive: one top directory with {INDEX_NAME} expected, found "
                       f"{len(tops)} top directories and {len(index_at)} {INDEX_NAME}", file=shown)
    m = members[index_at[0]]
    top = index_at[0].split("/", 1)[0]
    where = f"{shown}: {index_at[0]}"
    if m.is_dir:
        raise UnsafeArchive(f"{where}: a directory")
    wire.check_size(m.size, MAX_INDEX_BYTES, error=UnsafeArchive, shown=where)
    f.seek(m.offset)
    doc = wire.loads(f.read(m.size), error=UnsafeArchive, shown=where)
    if not isinstance(doc, dict) or doc.get("archive_version") != ARCHIVE_VERSION:
        got = doc.get("archive_version") if isinstance(doc, dict) else type(doc).__name__
        raise BadInput(f"archive_version {repr(got)[:200]} is not {ARCHIVE_VERSION}", file=shown, field=INDEX_NAME)
    try:
        index = Index.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])[:200]  # a key may be a megabyte long
        raise UnsafeArchive(f"{where}: {loc}: {err['msg']}") from None
    if index.artifact != top:
        raise UnsafeArchive(f"{where}: names artifact {_cut(index.artifact)}, the archive's top directory is {_cut(top)}")
    _check_against_headers(index, members, top, where)
    return index, top


def _check_against_headers(index: Index, members: dict[str, Member], top: str, where: str) -> None:
    """The index and the headers agree: each entry a regular member of its size (one sha256 per path), each member named."""
    named: dict[str, IndexEntry] = {}
    for e in index.entries:
        rel = _safe_name(e.path, where)
        m = members.get(f"{top}/{rel}")
        if m is None and rel == e.path:
            continue  # a partial archive: that object is absent (the lock's caller names it if it is wanted)
        if rel != e.path or m is None or m.is_dir:
            raise UnsafeArchive(f"{where}: entry {_cut(e.entry)} names {_cut(e.path)}, which is not a regular member")
        if m.size != e.size:
            raise UnsafeArchive(f"{where}: entry {_cut(e.entry)} says {e.size} bytes, member {_cut(m.name)} holds {m.size}")
        other = named.setdefault(e.path, e)
        if (other.sha256, other.mode) != (e.sha256, e.mode):
            raise UnsafeArchive(f"{where}: two entries give {_cut(e.path)} different sha256s or modes")
    extra = next((n for n, m in members.items() if not m.is_dir and n != f"{top}/{INDEX_NAME}"
                  and n.split("/", 1)[1] not in named), None)
    if extra:
        raise UnsafeArchive(f"{where}: member {_cut(extra)} is in no entry")


def _cut(text: str) -> str:
    """A name as a refusal shows it: quoted, and short (a pax header can make one 64 KiB long)."""
    return repr(text) if len(text) <= 200 else repr(text[:200]) + "…"
