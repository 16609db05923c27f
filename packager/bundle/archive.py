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

from packager.errors import BadInput, UnsafeArchive
from packager.image.writer import oci

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_ENTRY_BYTES = 2 << 30
DEFAULT_MAX_TOTAL_BYTES = 8 << 30
DEFAULT_MAX_ENTRIES = 100_000
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


def scan_tree(root: Path) -> Tree:
    files: dict[str, Path] = {}
    dirs: list[str] = []
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for name in dirnames + filenames:
            p = d / name
            rel = p.relative_to(root).as_posix()
            mode = p.lstat().st_mode
            if stat.S_ISREG(mode):
                files[rel] = p
            elif stat.S_ISDIR(mode):
                dirs.append(rel)
            else:
                others.append(rel)
    return Tree(dict(sorted(files.items())), tuple(sorted(dirs)), tuple(sorted(others)))


def _entries(root: Path, epoch: int) -> list[oci.Entry]:
    """Every directory and regular file below root as tar entries; anything else is refused."""
    tree = scan_tree(root)
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
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES


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
    return PurePosixPath(*parts)


def _kind(m: tarfile.TarInfo) -> str | None:
    if m.issym():
        return f"symlink to {m.linkname!r}"
    if m.islnk():
        return f"hard link to {m.linkname!r}"
    if m.ischr() or m.isblk():
        return "device file"
    if m.isfifo():
        return "FIFO"
    if not (m.isfile() or m.isdir()):
        return f"unsupported entry type {m.type!r}"
    return None


def safe_unpack(archive: Path, dest: Path, limits: Limits = Limits()) -> Path:
    """Unpack a bundle .tar.gz into the empty directory ``dest``; every entry is checked first.

    Files are created with O_EXCL|O_NOFOLLOW below directories we created
    ourselves, so even a check we forgot could not write outside ``dest``.
    """
    try:
        with archive.open("rb") as f:
            magic = f.read(2)
    except OSError as e:
        raise UnsafeArchive(f"{archive}: cannot read: {e.strerror}") from e
    if magic != GZIP_MAGIC:
        raise UnsafeArchive(f"{archive.name}: not a gzip file (magic {magic.hex() or 'empty'})")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise BadInput("unpack target is not empty", file=dest)
    root = dest.resolve()
    total = 0
    seen: set[PurePosixPath] = set()
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            count = 0
            while (m := tar.next()) is not None:
                count += 1
                if count > limits.max_entries:
                    raise UnsafeArchive(f"{archive.name}: more than {limits.max_entries} entries")
                if m.isdir() and m.name.strip("/") in ("", "."):
                    continue  # "./" as written by `tar -C dir .`: the target itself
                rel = _safe_name(m.name)
                kind = _kind(m)
                if kind:
                    raise UnsafeArchive(f"entry {m.name!r}: {kind} not allowed in a bundle")
                if rel in seen:
                    raise UnsafeArchive(f"entry {m.name!r}: duplicate entry")
                seen.add(rel)
                if m.size > limits.max_entry_bytes:
                    raise UnsafeArchive(f"entry {m.name!r}: {m.size} bytes exceeds the {limits.max_entry_bytes} byte limit")
                total += m.size
                if total > limits.max_total_bytes:
                    raise UnsafeArchive(f"{archive.name}: more than {limits.max_total_bytes} bytes unpacked")
                target = root.joinpath(*rel.parts)
                _mkdirs(root, target.parent)
                if m.isdir():
                    _mkdirs(root, target)
                    continue
                src = tar.extractfile(m)
                assert src is not None  # regular file, checked above
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    remaining = m.size
                    while remaining:
                        block = src.read(min(remaining, 1 << 20))
                        if not block:
                            raise UnsafeArchive(f"{archive.name}: truncated inside entry {m.name!r}")
                        out.write(block)
                        remaining -= len(block)
            # tarfile stops at the end-of-archive blocks; read the gzip stream to
            # its end so a cut-off trailer (CRC, length) is noticed, not ignored.
            while tar.fileobj.read(1 << 20):  # type: ignore[union-attr]
                pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise UnsafeArchive(f"{archive.name}: truncated or corrupt gzip stream ({e})") from e
    except tarfile.ReadError as e:
        if "unexpected end" in str(e) or "truncated" in str(e):
            raise UnsafeArchive(f"{archive.name}: truncated archive ({e})") from e
        raise UnsafeArchive(f"{archive.name}: not a valid tar archive ({e})") from e
    except FileExistsError as e:
        raise UnsafeArchive(f"{archive.name}: entry collides with an existing path ({e.filename})") from e
    log.debug("unpacked %d entries (%d bytes) from %s", len(seen), total, archive)
    return dest


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
