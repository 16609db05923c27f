"""Content-addressed store: every locked file lives at ``cas/sha256/<2 hex>/<64 hex>``.

A file enters the store only after its sha256 has been checked, and always via
a temporary file in the same directory followed by an atomic rename, so a file
at its final path is complete by construction. Reads re-check the size always
and the full hash when asked, because a cache on disk can rot or be edited.

Beside each object a small ``<hash>.meta.json`` records the names and URLs it
was stored under, so a person browsing the cache can tell what a hash is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from packager.errors import CacheMissError, IntegrityError, NetworkUnavailable

log = logging.getLogger(__name__)

ENV_ROOT = "REQUEST_PACK_CACHE"
_CHUNK = 1 << 20
_USER_AGENT = "request-pack (+https://request-pack.org)"


def default_root() -> Path:
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "request-pack"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_digest(path: Path) -> str:
    """``sha256:<hex>``, the OCI/in-toto digest form of a file."""
    return "sha256:" + sha256_file(path)


def _check_hex(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a lower-case sha256 hex digest: {sha256!r}")
    return sha256


@dataclass(frozen=True)
class Cache:
    """One cache root. Subdirectories: ``cas/`` (objects), ``apt/`` (per-arch apt state), ``pip/``."""

    root: Path

    @classmethod
    def open(cls, root: Path | str | None = None) -> "Cache":
        path = Path(root).expanduser() if root is not None else default_root()
        (path / "cas" / "sha256").mkdir(parents=True, exist_ok=True)
        return cls(root=path)

    # --- locations ------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        """Where the object would live; it may not exist (see :meth:`path_of`)."""
        _check_hex(sha256)
        return self.root / "cas" / "sha256" / sha256[:2] / sha256

    def _meta_path(self, sha256: str) -> Path:
        return self.object_path(sha256).with_name(sha256 + ".meta.json")

    def subdir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- queries ------------------------------------------------------------------

    def has(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def path_of(self, sha256: str, *, size: int | None = None, verify: bool = False, name: str | None = None) -> Path:
        """Path of a stored object, re-checked: size when given, full hash when ``verify``.

        ``name`` is what the caller calls the file (e.g. the .deb name) and goes
        into the error so the message says which input is broken.
        """
        path = self.object_path(sha256)
        what = f"{name} ({path})" if name else str(path)
        if not path.is_file():
            raise CacheMissError(f"{name or sha256} is not in the cache ({path}): run `request-pack fetch`")
        if size is not None:
            actual_size = path.stat().st_size
            if actual_size != size:
                raise IntegrityError(what, f"{sha256} ({size} bytes)", f"{actual_size} bytes")
        if verify:
            actual = sha256_file(path)
            if actual != sha256:
                raise IntegrityError(what, sha256, actual)
        return path

    def describe(self, sha256: str) -> dict:
        """The sidecar record (names, urls) of an object, or an empty dict."""
        try:
            return json.loads(self._meta_path(sha256).read_text())
        except (OSError, ValueError):
            return {}

    # --- insertion ------------------------------------------------------------------

    def put_file(self, path: Path | str, expected_sha256: str | None = None, *, name: str | None = None, url: str | None = None) -> str:
        """Copy a file into the store after checking it; return its sha256."""
        path = Path(path)
        with open(path, "rb") as f:
            return self._put_stream(f, expected_sha256, what=str(path), name=name or path.name, url=url)

    def put_bytes(self, data: bytes, expected_sha256: str | None = None, *, name: str | None = None) -> str:
        import io

        return self._put_stream(io.BytesIO(data), expected_sha256, what=name or "<bytes>", name=name, url=None)

    def fetch_url(self, url: str, sha256: str, *, name: str | None = None, size: int | None = None, timeout: float = 120) -> Path:
        """Download ``url`` into the store unless the object is already there; return its path.

        The download streams to a temporary file while hashing; a mismatch
        leaves nothing behind and raises IntegrityError naming the URL.
        """
        _check_hex(sha256)
        if self.has(sha256):
            self._note(sha256, name=name, url=url)
            return self.path_of(sha256, size=size, name=name)
        log.debug("fetch %s", url)
        req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                self._put_stream(resp, sha256, what=url, name=name or url.rsplit("/", 1)[-1], url=url)
        except urllib.error.HTTPError as e:
            raise NetworkUnavailable(f"{url}: HTTP {e.code} {e.reason}", fix="check the URL, or fill the cache with `request-pack fetch --from FILE`") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise NetworkUnavailable(f"cannot download {url}: {reason}", fix="connect to the network, or fill the cache with `request-pack fetch --from FILE`") from e
        return self.path_of(sha256, size=size, name=name)

    def _put_stream(self, stream: BinaryIO, expected: str | None, *, what: str, name: str | None, url: str | None) -> str:
        if expected is not None:
            _check_hex(expected)
        tmp_dir = self.subdir("tmp")
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="incoming-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            # 1. verify before the object becomes visible under its name
            if expected is not None and digest != expected:
                raise IntegrityError(what, expected, digest)
            final = self.object_path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            # 2. rename is atomic within one filesystem (tmp/ sits under the same root)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        self._note(digest, name=name, url=url)
        return digest

    def _note(self, sha256: str, *, name: str | None, url: str | None) -> None:
        if not name and not url:
            return
        meta = self.describe(sha256)
        changed = False
        for key, value in (("names", name), ("urls", url)):
            if value and value not in meta.setdefault(key, []):
                meta[key].append(value)
                meta[key].sort()
                changed = True
        if changed:
            target = self._meta_path(sha256)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, target)
