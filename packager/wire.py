"""Reading input nobody vouches for: bounded before it happens, strict when decoded.

Bundles, archives and manifests come from strangers. Every read here is
bounded *before* it happens:

* only regular files are opened (``lstat`` first; ``O_NOFOLLOW|O_NONBLOCK`` and an
  ``fstat`` of the open descriptor close the race where the path is swapped for
  a symlink, a FIFO or a device between the two), and their size is checked
  against a cap before the first byte is read;
* streaming reads (hashing, line by line) stop at the cap even if the file grows.

Wire formats are decoded strictly: UTF-8 JSON only (no byte-order mark, no
UTF-16/32, which ``json.loads`` of bytes would silently accept), finite numbers
only (no ``NaN``/``Infinity`` tokens, no ``1e999``), no duplicate keys, and a
nesting limit checked before the recursive parser runs, so no input can raise
``RecursionError``. :class:`WireModel` is the shared pydantic base with the same
rule (``allow_inf_nan=False``) for values that never went through this parser.

File names follow one rule set (:func:`check_name`, :func:`collision`): NFC,
no control characters, bounded component and path length and depth, and no two
names equal after Unicode normalisation and case folding.

Every function takes ``error``, the exception class (``errors.py``) that the
caller's refusal belongs to, and ``shown``, the name the one-line message starts with.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict

Refuse = Callable[[str], Exception]

MAX_DEPTH = 64  # JSON/YAML nesting; our formats nest fewer than 10 levels
NAME_MAX_BYTES = 255  # one path component (Linux NAME_MAX)
PATH_MAX_BYTES = 1024  # a relative path inside a bundle or artifact
PATH_MAX_DEPTH = 32  # components of such a path
_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


class WireModel(BaseModel):
    """Base of every wire model: unknown fields refused, frozen, finite floats only."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- bounded reads ------------------------------------------------------------------


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def kind_of(mode: int) -> str | None:
    """None for a regular file, else what it is ("a symlink", "a FIFO", ...)."""
    return None if stat.S_ISREG(mode) else _kind(mode)


def check_size(size: int, limit: int, *, error: Refuse, shown: str) -> None:
    if size > limit:
        raise error(f"{shown}: {size} bytes is over the {limit}-byte limit")


def lstat_regular(path: Path, limit: int, *, error: Refuse, shown: str) -> os.stat_result:
    """The file's lstat, if it is a regular file no larger than ``limit``; never follows a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise error(f"{shown}: missing") from None
    except OSError as e:
        raise error(f"{shown}: cannot stat: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{shown}: is {_kind(st.st_mode)}; only regular files are read")
    check_size(st.st_size, limit, error=error, shown=shown)
    return st


@contextmanager
def open_regular(path: Path, limit: int, *, error: Refuse, shown: str) -> Iterator[BinaryIO]:
    """Open a regular file of at most ``limit`` bytes for reading; callers read at most ``limit + 1`` bytes."""
    st = lstat_regular(path, limit, error=error, shown=shown)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise error(f"{shown}: cannot open: {e.strerror or e}") from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise error(f"{shown}: replaced while being opened")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_regular(path: Path, limit: int, *, error: Refuse, shown: str) -> bytes:
    """The bytes of a regular file, refused before reading if it is not one or is over ``limit``."""
    with open_regular(path, limit, error=error, shown=shown) as f:
        data = _read_upto(f, limit + 1, error=error, shown=shown)
    check_size(len(data), limit, error=error, shown=shown)  # it grew after the stat
    return data


def _read_upto(f: BinaryIO, n: int, *, error: Refuse, shown: str) -> bytes:
    parts = []
    while n > 0:
        try:
            block = f.read(min(n, _CHUNK))
        except OSError as e:
            raise error(f"{shown}: cannot read: {e.strerror or e}") from None
        if not block:
            break
        parts.append(block)
        n -= len(block)
    return b"".join(parts)


def iter_chunks(path: Path, limit: int, *, error: Refuse, shown: str) -> Iterator[bytes]:
    """A regular file in 1 MiB chunks, never more than ``limit`` bytes in all."""
    with open_regular(path, limit, error=error, shown=shown) as f:
        total = 0
        while block := _read_upto(f, _CHUNK, error=error, shown=shown):
            total += len(block)
            check_size(total, limit, error=error, shown=shown)
            yield block


def sha256_regular(path: Path, limit: int, *, error: Refuse, shown: str) -> str:
    h = hashlib.sha256()
    for block in iter_chunks(path, limit, error=error, shown=shown):
        h.update(block)
    return h.hexdigest()


def iter_lines(path: Path, limit: int, *, max_line: int, error: Refuse, shown: str) -> Iterator[bytes]:
    """Lines (without the newline) of a regular file; a line longer than ``max_line`` is refused."""
    rest = b""
    lineno = 0
    for block in iter_chunks(path, limit, error=error, shown=shown):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            lineno += 1
            if len(line) > max_line:
                raise error(f"{shown}: line {lineno} is over the {max_line}-byte line limit")
            yield line
        if len(rest) > max_line:
            raise error(f"{shown}: line {lineno + 1} is over the {max_line}-byte line limit")
    if rest:
        yield rest


# --- strict JSON --------------------------------------------------------------------

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xef\xbb\xbf", "UTF-8 with a byte-order mark"), (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"),
)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def decode_utf8(data: bytes, *, error: Refuse, shown: str) -> str:
    """Text of a wire file: UTF-8 without a byte-order mark, nothing else."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise error(f"{shown}: encoded as {name}; only UTF-8 without a byte-order mark is accepted")
    if b"\x00" in data[:4]:
        raise error(f"{shown}: NUL bytes at the start (UTF-16/32?); only UTF-8 is accepted")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{shown}: not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects, counted without parsing.

    Written by hand because no stdlib parser bounds its recursion: ``json.loads``
    raises RecursionError on a few thousand ``[``. Strings are removed first so
    brackets inside them do not count; an unterminated string can only make the
    count larger, and such a document is invalid anyway.
    """
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return data.count(b"[") + data.count(b"{")  # an upper bound, and small: nothing to scan
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    return max(accumulate(1 if c in b"[{" else -1 for c in brackets), default=0)


class _Reject(ValueError):
    pass


def _no_constant(token: str) -> Any:
    raise _Reject(f"{token} is not a finite number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Reject(f"{text[:40]} overflows to infinity")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Reject(f"duplicate key {dup!r}")
    return out


def loads(data: bytes, *, error: Refuse, shown: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document strictly (UTF-8, finite numbers, unique keys, bounded nesting)."""
    text = decode_utf8(data, error=error, shown=shown)
    depth = json_depth(data)
    if depth > max_depth:
        raise error(f"{shown}: JSON nested {depth} levels deep, over the limit of {max_depth}")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique)
    except _Reject as e:
        raise error(f"{shown}: not accepted JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError; an int over Python's digit limit
        raise error(f"{shown}: not valid JSON (truncated or corrupt?): {e}") from None


def load_file(path: Path, limit: int, *, error: Refuse, shown: str) -> Any:
    return loads(read_regular(path, limit, error=error, shown=shown), error=error, shown=shown)


# --- names ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(rel: str, *, error: Refuse, shown: str) -> None:
    """A relative POSIX path as a bundle or archive may hold it: NFC, printable, bounded."""
    try:
        raw = rel.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{shown}: name {rel!r} is not valid UTF-8") from None
    if _CONTROL.search(rel):
        raise error(f"{shown}: name {rel!r} holds a control character")
    if not unicodedata.is_normalized("NFC", rel):
        raise error(f"{shown}: name {rel!r} is not in Unicode NFC form")
    if len(raw) > PATH_MAX_BYTES:
        raise error(f"{shown}: name is {len(raw)} bytes long, over the {PATH_MAX_BYTES}-byte path limit")
    parts = rel.split("/")
    if len(parts) > PATH_MAX_DEPTH:
        raise error(f"{shown}: name {rel[:60]!r}… is {len(parts)} levels deep, over the limit of {PATH_MAX_DEPTH}")
    long = next((p for p in parts if len(p.encode("utf-8")) > NAME_MAX_BYTES), None)
    if long is not None:
        raise error(f"{shown}: a component of {rel[:60]!r}… is {len(long.encode())} bytes, over the {NAME_MAX_BYTES}-byte limit")


def fold(name: str) -> str:
    """The key two names collide on: canonical caseless matching (NFD, case fold, NFD)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def collision(names: Iterable[str]) -> tuple[str, str] | None:
    """The first two names (or directory prefixes of names) that differ but fold alike."""
    seen: dict[str, str] = {}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            key = fold(prefix)
            other = seen.setdefault(key, prefix)
            if other != prefix:
                return other, prefix
    return None
