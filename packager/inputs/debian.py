"""Resolve the exact .deb set of a minimal Debian root filesystem, per architecture.

What is resolved: every ``Essential: yes`` package, ``apt``, and the manifest's
``system.packages``, closed under Depends/Pre-Depends (never Recommends) by
apt itself. That is exactly what ``mmdebstrap --variant=apt --include=...``
installs, so the build can feed these files to mmdebstrap as a local flat
repository and get the same system without the network. Alternatives (``a | b``)
are chosen by apt the same way mmdebstrap's apt would; since the repository
then holds only the chosen package, apt cannot choose differently later.

How: a private apt directory per architecture under the cache
(``apt/<arch>/``) with its own sources.list, empty dpkg status and no host
configuration (APT_CONFIG points at our file, and ``Dir::Etc::parts`` at our
empty directory, so the host's apt.conf.d and sources never leak in). Lists
stay in the cache, so a re-lock only revalidates them (If-Modified-Since).

Suites: ``<suite>``, ``<suite>-updates`` and ``<suite>-security`` (main). The
security archive lives at ``.../debian-security`` beside ``.../debian``; for a
mirror URL that does not end in ``/debian`` only the first two are used.
Security updates are included because a rootfs without them ships known
holes; the lock, not the mirror, pins what is built.

The Debian mirror moves and no snapshot service is reachable: ``lock``
resolves against the live mirror at the moment it runs, so locking on two days
can give two locks. ``lock --frozen`` never resolves; the lock is the pin.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Packages

from packager.cache import Cache
from packager.errors import (
    BadInput,
    EnvironmentMissing,
    NetworkUnavailable,
    ToolMissing,
)

log = logging.getLogger(__name__)

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
BASE_PACKAGES = ("?essential", "apt")
# The hash column is empty for suites that publish no MD5Sum (bookworm-security).
_URI_LINE = re.compile(r"^'(?P<url>[^']+)' (?P<file>\S+) (?P<size>\d+)(?: (?P<hash>\S*))?$")


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    filename: str
    size: int
    sha256: str
    url: str


@dataclass(frozen=True)
class AptSource:
    url: str
    suite: str
    component: str = "main"


@dataclass(frozen=True)
class Resolution:
    arch: str
    sources: tuple[AptSource, ...]
    packages: tuple[DebPackage, ...]


def sources_for(mirror: str, suite: str) -> tuple[AptSource, ...]:
    mirror = mirror.rstrip("/")
    out = [AptSource(mirror, suite), AptSource(mirror, f"{suite}-updates")]
    if mirror.endswith("/debian"):
        out.append(AptSource(mirror + "-security", f"{suite}-security"))
    else:
        log.warning("mirror %s does not end in /debian: not adding %s-security", mirror, suite)
    return tuple(out)


class PrivateApt:
    """An apt configuration that touches nothing of the host's apt state."""

    def __init__(self, cache: Cache, arch: str, sources: tuple[AptSource, ...]) -> None:
        self.arch = arch
        self.sources = sources
        self.dir = cache.subdir("apt", arch)
        self.config = self.dir / "apt.conf"
        self._write()

    def _write(self) -> None:
        d = self.dir
        for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "etc/trusted.gpg.d",
                    "state/lists/partial", "cache/archives/partial", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # An empty dpkg database: resolve as for an empty root, never against the host.
        (d / "state/status").write_text("")
        signed = f"[signed-by={KEYRING}]" if KEYRING.exists() else ""
        lines = [f"deb {signed} {s.url} {s.suite} {s.component}".replace("  ", " ") for s in self.sources]
        _write_if_changed(d / "etc/sources.list", "\n".join(lines) + "\n")
        conf = {
            "Dir": "/",
            "Dir::Etc": f"{d}/etc",
            "Dir::Etc::main": f"{d}/etc/apt.conf.d/none",
            "Dir::Etc::sourcelist": f"{d}/etc/sources.list",
            "Dir::Etc::sourceparts": f"{d}/etc/sources.list.d",
            "Dir::Etc::parts": f"{d}/etc/apt.conf.d",
            "Dir::Etc::preferences": f"{d}/etc/preferences",
            "Dir::Etc::preferencesparts": f"{d}/etc/preferences.d",
            "Dir::Etc::trusted": f"{d}/etc/trusted.gpg",
            "Dir::Etc::trustedparts": f"{d}/etc/trusted.gpg.d",
            "Dir::State": f"{d}/state",
            "Dir::State::status": f"{d}/state/status",
            "Dir::Cache": f"{d}/cache",
            "Dir::Cache::srcpkgcache": "",  # 36 MB per arch that only speeds up a cold pkgcache build
            "Dir::Log": f"{d}/log",
            "APT::Architecture": self.arch,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "Acquire::Languages": "none",
            "Acquire::Retries": "3",
            # the lists dir belongs to root; the _apt sandbox user could not write it
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", "root"),
            "Debug::NoLocking": "true",
        }
        text = "".join(f'{k} "{v}";\n' for k, v in conf.items())
        text += f'APT::Architectures {{ "{self.arch}"; }};\n'
        _write_if_changed(self.config, text)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APT_", "DEBIAN_"))}
        env.update(APT_CONFIG=str(self.config), LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive")
        log.debug("+ APT_CONFIG=%s %s", self.config, " ".join(args))
        return subprocess.run(args, env=env, capture_output=True, text=True)

    def update(self, attempts: int = 2) -> tuple[AptSource, ...]:
        """Refresh the lists; return the sources actually usable.

        A mirror mid-sync serves an InRelease that disagrees with its Packages
        files ("File has unexpected size"). If that hits -updates or -security
        only, go on without that suite (warned, and recorded in the lock: the
        lock pins what was resolved either way); the base suite is required,
        and is retried once since a sync usually heals within seconds.
        """
        base = self.sources[0].suite
        for attempt in range(1, attempts + 1):
            proc = self._run(["apt-get", "update", "-q"])
            output = proc.stdout + proc.stderr
            failed_suites = set(re.findall(r"^Err:\d+ \S+ ([^/\s]+)", output, flags=re.M))
            errors = [ln for ln in output.splitlines() if ln.startswith(("Err:", "E:"))]
            if proc.returncode == 0 and not errors:
                self._check_lists()
                return self.sources
            if failed_suites and base not in failed_suites:
                log.warning("%s: %s index is inconsistent on the mirror; resolving without it",
                            self.arch, ", ".join(sorted(failed_suites)))
                self.sources = tuple(s for s in self.sources if s.suite not in failed_suites)
                self._write()
                continue
            if attempt < attempts:
                log.warning("apt-get update for %s failed, retrying: %s", self.arch, "; ".join(errors[:1]))
                time.sleep(2)
        detail = "; ".join(errors[:3]) or proc.stderr.strip()[-300:]
        raise NetworkUnavailable(f"apt-get update for {self.arch} against {self.sources[0].url} failed: {detail}",
                                 fix="check the network and system.mirror")

    def _check_lists(self) -> None:
        # apt can end "successfully" with an index missing (ignored fetch); resolving
        # against a partial index would silently give another package set.
        lists = self.dir / "state" / "lists"
        for src in self.sources:
            stem = _uri_to_filename(f"{src.url}/dists/{src.suite}/{src.component}/binary-{self.arch}/Packages")
            if not any(p.name.startswith(stem) for p in lists.iterdir()):
                raise NetworkUnavailable(f"apt-get update for {self.arch} left no index for {src.suite}/{src.component}",
                                         fix="check the network and system.mirror")

    def resolve(self, packages: list[str]) -> list[DebPackage]:
        proc = self._run(["apt-get", "install", "--print-uris", "-y", "-qq", "--no-install-recommends", *packages])
        if proc.returncode != 0:
            raise BadInput(_apt_failure(proc.stdout + proc.stderr, self.arch), field="system.packages")
        uris = parse_print_uris(proc.stdout, self.arch)
        # --print-uris shows only the first hash apt knows (often MD5Sum): read SHA256 from the index.
        wanted = {name_version(store_name): store_name for store_name in uris}
        stanzas = self._show([f"{n}={v}" for n, v in sorted(wanted)])
        out = []
        for (name, version), store_name in sorted(wanted.items()):
            st = stanzas.get((name, version))
            if st is None or "SHA256" not in st:
                raise EnvironmentMissing(f"apt index for {self.arch} has no SHA256 for {name} {version}")
            url, size = uris[store_name]
            if int(st["Size"]) != size:
                raise EnvironmentMissing(f"apt disagrees with itself on the size of {name} {version}")
            out.append(DebPackage(name=name, version=version, architecture=st["Architecture"],
                                  filename=st["Filename"].rsplit("/", 1)[-1], size=size, sha256=st["SHA256"], url=url))
        return out

    def _show(self, specs: list[str]) -> dict[tuple[str, str], Packages]:
        proc = self._run(["apt-cache", "show", "--no-all-versions", *specs])
        if proc.returncode != 0:
            raise EnvironmentMissing(f"apt-cache show failed for {self.arch}: {proc.stderr.strip()[-300:]}")
        return parse_stanzas(proc.stdout)


SNAPSHOT = "https://snapshot.debian.org"


def snapshot_locations(deb: Path) -> list[str]:
    """Where Debian's snapshot service serves these bytes after the pool dropped them (a point release, a security update).

    snapshot.debian.org keeps every file ever published in the archive and serves it by
    content at ``/file/<sha1>``; the lock's sha256 still checks what comes back. SHA-1 because
    that is the service's key, computed here from the verified file in the cache.
    """
    h = hashlib.sha1(usedforsecurity=False)
    with open(deb, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return [f"{SNAPSHOT}/file/{h.hexdigest()}"]


def parse_stanzas(text: str) -> dict[tuple[str, str], Packages]:
    """Packages-file stanzas (``apt-cache show`` prints them) by (Package, Version); the first of a pair wins."""
    found: dict[tuple[str, str], Packages] = {}
    # use_apt_pkg=False: python-debian's own parser, no dependency on python3-apt's binding
    for st in Packages.iter_paragraphs(text, use_apt_pkg=False):
        if "Package" in st:
            found.setdefault((st["Package"], st["Version"]), st)
    return found


def resolve(cache: Cache, arch: str, mirror: str, suite: str, packages: list[str], *, update: bool = True) -> "Resolution":
    """The closed .deb set for one architecture, sorted by name."""
    for tool in ("apt-get", "apt-cache", "gpgv"):
        if shutil.which(tool) is None:
            raise ToolMissing(f"{tool} is not installed", fix="apt-get install -y apt gpgv debian-archive-keyring")
    if not KEYRING.exists():
        raise ToolMissing(f"{KEYRING} is missing", fix="apt-get install -y debian-archive-keyring")
    apt = PrivateApt(cache, arch, sources_for(mirror, suite))
    sources = apt.update() if update else apt.sources
    debs = apt.resolve([*BASE_PACKAGES, *packages])
    log.info("%s: %d debs, %.1f MB", arch, len(debs), sum(d.size for d in debs) / 1e6)
    return Resolution(arch=arch, sources=sources, packages=tuple(sorted(debs, key=lambda d: d.name)))


def parse_print_uris(stdout: str, arch: str) -> dict[str, tuple[str, int]]:
    """``{apt file name: (url, size)}`` from ``apt-get --print-uris`` output."""
    uris: dict[str, tuple[str, int]] = {}
    for line in stdout.splitlines():
        if not line.startswith("'"):
            continue
        m = _URI_LINE.match(line.rstrip())
        if not m:
            # never drop a package silently: the set must stay closed
            raise EnvironmentMissing(f"cannot parse apt-get --print-uris output for {arch}: {line!r}")
        uris[m["file"]] = (m["url"], int(m["size"]))
    if not uris:
        raise EnvironmentMissing(f"apt-get --print-uris for {arch} printed no packages: {stdout[-300:]}")
    return uris


def name_version(store_name: str) -> tuple[str, str]:
    """apt names a download ``name_version_arch.deb`` with ':' (epochs) quoted as %3a."""
    name, version, _arch = store_name[: -len(".deb")].split("_")
    return urllib.parse.unquote(name), urllib.parse.unquote(version)


def _apt_failure(output: str, arch: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.startswith("E:") or "but it is not" in ln or "has no installation candidate" in ln]
    unable = re.findall(r"Unable to locate package (\S+)", output)
    if unable:
        return f"no package {', '.join(unable)} for {arch} in the mirror"
    return f"apt cannot resolve the package set for {arch}: " + " ".join(lines[:4])


def _uri_to_filename(uri: str) -> str:
    """apt's name for a list file: scheme dropped, '/' turned into '_'."""
    rest = uri.split("://", 1)[-1]
    return rest.replace("/", "_")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
