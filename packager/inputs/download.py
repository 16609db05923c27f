"""Download one locked file into the cache: every recorded location in order, retried, resumed, verified.

A file the lock pins has a sha256 and one or more locations (the URL it was
locked from, then e.g. Debian's snapshot service by content). ``fetch`` tries
them in order:

* a *transient* failure (DNS "temporary failure in name resolution", a refused
  or reset connection, a timeout, a short read, HTTP 408/429/5xx) is retried on
  the same location with exponential backoff; bytes already received stay in a
  partial file under ``<cache>/partial/`` and the next attempt asks only for the
  rest (HTTP ``Range``), so a reset at 90 % of a 60 MB wheel costs 10 %;
* a *permanent* failure (any other 4xx, e.g. 404 once a point release removed
  the .deb from the pool; bytes that do not hash to the pin) moves on to the
  next location at once: retrying cannot change the answer;
* when every location failed, ``DownloadFailed`` says so in one line naming the
  entry and each location with its reason.

The object enters the cache only through ``Cache.put_file`` with the pinned
hash, so nothing unverified is ever visible under its name.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from packager.cache import Cache, sha256_file
from packager.errors import DownloadFailed, IntegrityError

log = logging.getLogger(__name__)

USER_AGENT = "request-pack"
ATTEMPTS = 4  # per location: the first try and three retries
BACKOFF = 1.0  # seconds before the first retry; doubled each time
TIMEOUT = 60.0
_CHUNK = 1 << 20
FIX = "check the network, or fill the cache offline with `request-pack fetch ARTIFACT --from ARCHIVE_OR_DIR`"


@dataclass(frozen=True)
class Policy:
    """How hard to try one location. Tests shorten ``backoff``; nothing else should need to."""

    attempts: int = ATTEMPTS
    backoff: float = BACKOFF
    timeout: float = TIMEOUT
    sleep: Callable[[float], None] = time.sleep


class _Transient(Exception):
    """Worth another attempt at the same location."""


class _Permanent(Exception):
    """This location cannot serve the file; go to the next one."""


def fetch(cache: Cache, sha256: str, locations: Sequence[str], *, name: str, size: int | None = None,
          policy: Policy = Policy()) -> Path:
    """The verified object, from the cache or downloaded from the first location that serves it."""
    if cache.has(sha256):
        return cache.path_of(sha256, size=size, name=name)
    tried: list[tuple[str, str]] = []
    for url in dict.fromkeys(locations):  # in order, each once
        reason = _try_location(cache, sha256, url, name=name, size=size, policy=policy)
        if reason is None:
            return cache.path_of(sha256, size=size, name=name)
        log.warning("%s: %s: %s", name, url, reason)
        tried.append((url, reason))
    raise DownloadFailed(name, tried, fix=FIX)


def partial_path(cache: Cache, sha256: str) -> Path:
    """Where the received bytes of an unfinished download of ``sha256`` wait for the rest."""
    return cache.subdir("partial") / f"{sha256}.part"


# Hosts that exhausted their retries a moment ago, by netloc: on a machine with no network at all
# every file would otherwise spend the whole backoff again (DNS says "try again" offline, too).
DOWN_FOR = 120.0
_down: dict[str, tuple[float, str]] = {}
_down_lock = threading.Lock()


def _host_down(url: str) -> str | None:
    with _down_lock:
        since = _down.get(urlparse(url).netloc)
    if since and time.monotonic() - since[0] < DOWN_FOR:
        return f"{since[1]} (host given up on {time.monotonic() - since[0]:.0f} s ago)"
    return None


def _try_location(cache: Cache, sha256: str, url: str, *, name: str, size: int | None, policy: Policy) -> str | None:
    """None when the object is now in the cache, else the reason this location failed for good."""
    if (down := _host_down(url)) is not None:
        return down
    part = partial_path(cache, sha256)
    last = ""
    for attempt in range(1, policy.attempts + 1):
        try:
            _receive(url, part, size=size, timeout=policy.timeout)
        except _Permanent as e:
            return str(e)
        except _Transient as e:
            last = str(e)
            if attempt < policy.attempts:
                delay = policy.backoff * 2 ** (attempt - 1)
                have = part.stat().st_size if part.exists() else 0
                log.info("%s: %s (attempt %d/%d), retrying in %.1f s from byte %d", name, last, attempt,
                         policy.attempts, delay, have)
                policy.sleep(delay)
            continue
        # 1. complete: the bytes must be the pinned ones, else this location serves something else
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink(missing_ok=True)
            return f"sha256 mismatch (got {actual})"
        # 2. into the store through the one verified door, then the partial file goes
        try:
            cache.put_file(part, sha256, name=name.rsplit(" ", 1)[-1], url=url)
        except IntegrityError as e:  # changed on disk between hashing and storing
            return str(e)
        part.unlink(missing_ok=True)
        return None
    with _down_lock:
        _down[urlparse(url).netloc] = (time.monotonic(), last)
    return f"{last} (gave up after {policy.attempts} attempts)"


def _receive(url: str, part: Path, *, size: int | None, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``; raise _Transient or _Permanent on failure."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:  # cannot be a prefix of the pinned file
        part.unlink()
        have = 0
    if size is not None and have == size:
        return  # every byte is here already; the caller checks the hash
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = resp.status
            if have and status != 206:
                # the server ignored the range and sends the whole file: start over
                have = 0
            elif have and not _range_starts_at(resp.headers.get("Content-Range", ""), have):
                raise _Transient(f"HTTP 206 with an unexpected Content-Range {resp.headers.get('Content-Range')!r}")
            with open(part, "ab" if have else "wb") as out:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    if size is not None and out.tell() > size:
                        out.close()
                        part.unlink()
                        raise _Permanent(f"more than the locked {size} bytes")
            declared = resp.headers.get("Content-Length")
            received = part.stat().st_size - have
            if declared is not None and int(declared) != received:
                raise _Transient(f"connection closed after {received} of {declared} bytes")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our partial file is no prefix of what the server has: start over
            part.unlink(missing_ok=True)
            raise _Transient("HTTP 416 for the resumed range; starting over") from e
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        raise _Permanent(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _classify(e.reason, url) from e
    except (http.client.HTTPException, OSError) as e:  # reset, timeout or short read mid-body
        raise _classify(e, url) from e


def _range_starts_at(content_range: str, offset: int) -> bool:
    # "bytes 1000-1999/2000"
    try:
        return int(content_range.split()[1].split("-")[0]) == offset
    except (IndexError, ValueError):
        return False


def _classify(reason: object, url: str) -> Exception:
    """DNS answers "try again", resets, refusals and timeouts are transient; a name that does not exist is not."""
    if isinstance(reason, socket.gaierror):
        if reason.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            return _Transient(f"DNS: {reason.strerror}")
        return _Permanent(f"DNS: {reason.strerror}")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _Transient("timed out")
    if isinstance(reason, http.client.IncompleteRead):
        return _Transient(f"connection closed after {len(reason.partial)} more bytes")
    if isinstance(reason, (ConnectionError, http.client.HTTPException)):
        return _Transient(f"{type(reason).__name__}: {reason}")
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED,
                                                        errno.ECONNRESET, errno.ETIMEDOUT):
        return _Transient(os.strerror(reason.errno))
    if isinstance(reason, str):  # urllib's own reasons, e.g. "unknown url type"
        return _Permanent(reason)
    return _Permanent(f"{type(reason).__name__}: {reason}")
