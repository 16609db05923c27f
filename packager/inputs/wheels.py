"""Resolve pinned Python requirements to exact wheel files, per target platform.

pip does the resolving: ``pip install --dry-run --report`` with the target's
interpreter (the suite's python3, ``platforms.BaseSystem``), ABI and platform tags, binary
only, prints which files it would install with their URLs and sha256. Nothing
is installed; the chosen files are then downloaded into the cache, verified.

Host configuration must not change a lock. This machine, like many, has a
pip.conf (``/etc/xdg/pip``, ``/etc/pip.conf``) with constraints and find-links,
and ``PIP_*`` variables; ``--isolated`` alone still reads the global files, so
pip runs with ``PIP_CONFIG_FILE=/dev/null`` (pip's documented "load no config
file at all") in an environment stripped of every ``PIP_*`` variable, and
against PyPI explicitly.

One limitation of pip: ``--platform`` changes the tags, not the marker
environment, so a *transitive* requirement's marker (``; platform_machine ==
"aarch64"``) is evaluated for the host. Top-level requirements are filtered by
``Manifest.requirements_for`` for the target first; for transitive ones we
re-evaluate each marker for the target and fail if pip would have dropped a
package the target needs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from packager.cache import Cache
from packager.errors import (
    EnvironmentMissing,
    NetworkUnavailable,
    NoWheelError,
    ToolMissing,
    UnsupportedPlatformError,
)
from packager.manifest import marker_environment
from packager.platforms import BaseSystem, Platform

log = logging.getLogger(__name__)

PYPI_INDEX = "https://pypi.org/simple"
_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement (\S+)(?: \(from (?!versions:)([^)]+)\))?")


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str
    url: str
    requested: bool


def pip_env(cache: Cache) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1", LC_ALL="C.UTF-8")
    # Trust store is machine plumbing, not an input of the lock: keep the host's CA bundle if it set one.
    ca = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if ca:
        env["REQUESTS_CA_BUNDLE"] = ca
    return env


def pip_command(cache: Cache) -> list[str]:
    return [sys.executable, "-m", "pip", "--isolated", "--no-input", "--cache-dir", str(cache.subdir("pip"))]


def check_pip() -> str:
    proc = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolMissing(f"pip is not available for {sys.executable}", fix=f"{sys.executable} -m ensurepip")
    version = proc.stdout.split()[1]
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) < (22, 2):
        raise ToolMissing(f"pip {version} has no --report", fix=f"{sys.executable} -m pip install 'pip>=23'")
    return version


def resolve(cache: Cache, platform: Platform, system: BaseSystem, requirements: list[Requirement]) -> list[Wheel]:
    """Exact wheels (transitive closure) for one platform of ``system``'s interpreter; raises UnsupportedPlatformError."""
    if not requirements:
        return []
    with tempfile.TemporaryDirectory(prefix="request-pack-pip-") as tmp:
        report = Path(tmp) / "report.json"
        args = [*pip_command(cache), "install", "--dry-run", "--ignore-installed", "--quiet",
                "--report", str(report), "--index-url", PYPI_INDEX,
                "--only-binary=:all:", "--python-version", system.python,
                "--implementation", "cp", "--abi", system.python_tag, "--target", str(Path(tmp) / "target")]
        for tag in platform.wheel_tags:
            args += ["--platform", tag]
        args += [str(r) for r in requirements]
        log.debug("+ %s", " ".join(args))
        proc = subprocess.run(args, capture_output=True, text=True, env=pip_env(cache))
        if proc.returncode != 0:
            raise _explain_failure(proc.stderr + proc.stdout, platform, requirements)
        data = json.loads(report.read_text())
    wheels = []
    for item in data["install"]:
        info = item["download_info"]
        hashes = info.get("archive_info", {}).get("hashes", {})
        if "sha256" not in hashes:
            raise EnvironmentMissing(f"the index gave no sha256 for {info['url']}")
        url = info["url"]
        wheels.append(Wheel(name=canonicalize_name(item["metadata"]["name"]), version=item["metadata"]["version"],
                            filename=url.rsplit("/", 1)[-1].split("#")[0], sha256=hashes["sha256"], url=url,
                            requested=bool(item.get("requested"))))
    _check_transitive_markers(data, platform, system)
    return sorted(wheels, key=lambda w: w.name)


def _explain_failure(output: str, platform: Platform, requirements: list[Requirement]) -> Exception:
    missing = _NO_MATCH.findall(output)
    if missing:
        spec = missing[-1]
        origin = dict(_NO_VERSION.findall(output)).get(spec)
        top = {canonicalize_name(r.name): r for r in requirements}
        name = canonicalize_name(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0])
        if name in top and not origin:
            req = top[name]
            pin = f"{req.name}{req.specifier}"
            return NoWheelError(
                f'{pin} has no wheel for {platform.value}: use framework "reference" on that platform or drop it '
                f"(e.g. add ; platform_machine != '{platform.uname_machine}' to the requirement)",
                requirement=name, field="python.requirements")
        via = f" (needed by {origin})" if origin else ""
        return UnsupportedPlatformError(
            f"{spec}{via} has no wheel for {platform.value}: pin a version that has one, take it from Debian "
            f"(system.packages) or drop the requirement on that platform", field="python.requirements")
    if "Could not fetch URL" in output or "NewConnectionError" in output or "ConnectTimeout" in output:
        return NetworkUnavailable(f"pip cannot reach {PYPI_INDEX}", fix="check the network")
    tail = " ".join(ln.strip() for ln in output.strip().splitlines()[-4:])
    return UnsupportedPlatformError(f"pip cannot resolve the requirements for {platform.value}: {tail}", field="python.requirements")


def _check_transitive_markers(report: dict, platform: Platform, system: BaseSystem) -> None:
    """Fail if pip, judging markers by the host, left out something the target needs."""
    host_env = report.get("environment", {})
    target_env = marker_environment(platform, system)
    chosen = {canonicalize_name(i["metadata"]["name"]) for i in report["install"]}
    for item in report["install"]:
        for text in item["metadata"].get("requires_dist", []) or []:
            req = Requirement(text)
            if req.marker is None or "extra" in str(req.marker):
                continue
            marker: Marker = req.marker
            on_target = marker.evaluate({**target_env, "extra": ""})
            on_host = marker.evaluate({**host_env, "extra": ""})
            if on_target and not on_host and canonicalize_name(req.name) not in chosen:
                raise UnsupportedPlatformError(
                    f"{item['metadata']['name']} needs {req} on {platform.value}, which pip skipped because it judges "
                    f"markers by this host: add {req.name} pinned with ==, with that marker, to python.requirements",
                    field="python.requirements")
