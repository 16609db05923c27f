"""The base root filesystem of one architecture, made by mmdebstrap from exactly the locked .debs.

The mirror moves, so mmdebstrap never sees it: the locked .debs are hard-linked
from the cache into a flat apt repository (``Packages`` + ``Release`` written
by apt-ftparchive) and that is the only source. ``--variant=essential`` with
every locked package name in ``--include`` installs the locked set and
nothing else (nothing else exists in the repository); afterwards the dpkg
database is compared with the lock, package by package.

The tar is cached under ``<cache>/rootfs/<key>.tar``, keyed by the recipe
version, the architecture, the epoch and the sorted .deb hashes, because a
foreign architecture costs minutes under QEMU (maintainer scripts run
emulated). Its own sha256 is recorded so two builders can compare bases.

mmdebstrap's tar is already sorted with clamped mtimes; ``layers.rootfs_entries``
and ``oci.write_layer`` normalise it again and drop what a runtime provides or
what leaks the build host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packager.cache import Cache, sha256_file
from packager.contract import APP_DIR, RUNNER_UID
from packager.contract import RUNNER_USER as RUNNER
from packager.errors import BuildFailed, EmulationMissing
from packager.platforms import DEFAULT_SUITE, Platform
from packager.tools import need

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# Docs, manuals and translations are not needed to run a benchmark; copyrights stay (licences).
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)

# Run on the host with "$1" the chroot; what they write is part of the recipe (and the cache key).
CUSTOMIZE_HOOKS = (
    'rm -f "$1/etc/hostname" "$1/etc/resolv.conf" "$1/etc/machine-id" "$1/etc/apt/sources.list"',
    f'echo "{RUNNER}:x:{RUNNER_UID}:{RUNNER_UID}:request-pack runner:/home/{RUNNER}:/bin/sh" >> "$1/etc/passwd"',
    f'echo "{RUNNER}:x:{RUNNER_UID}:" >> "$1/etc/group"',
    f'echo "{RUNNER}:*:0:0:99999:7:::" >> "$1/etc/shadow"',
    f'mkdir -p "$1/home/{RUNNER}" "$1/{APP_DIR}" && chown {RUNNER_UID}:{RUNNER_UID} "$1/home/{RUNNER}" && chmod 0755 "$1/home/{RUNNER}"',
    'find "$1" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +',
    'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old',
)


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Rootfs:
    platform: Platform
    path: Path
    sha256: str
    key: str
    packages: int
    seconds: float
    cached: bool


def recipe_key(platform: Platform, debs: list[Deb], epoch: int) -> str:
    doc = {
        "recipe": RECIPE_VERSION,
        "arch": platform.debian_arch,
        "epoch": epoch,
        "debs": sorted(d.sha256 for d in debs),
        "dpkg": list(DPKG_OPTIONS),
        "hooks": list(CUSTOMIZE_HOOKS),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def check_emulation(platform: Platform, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Fail before minutes of work if a foreign architecture cannot run here."""
    if platform is Platform.native():
        return
    entry = binfmt_dir / (platform.qemu_binfmt or "")
    try:
        first = entry.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        first = "missing"
    if first != "enabled":
        raise EmulationMissing(f"{platform} needs QEMU: binfmt entry {entry} is {first}", fix="qemu/binfmt.sh (as root)")


def build_rootfs(platform: Platform, debs: list[Deb], cache: Cache, epoch: int, *, suite: str = DEFAULT_SUITE,
                 fresh: bool = False) -> Rootfs:
    """The cached base tar for these .debs, made now if absent (or if ``fresh``, into a temp file).

    ``suite`` names the local repository's release for apt; the .debs, not the name, decide the
    contents, so it is not part of the cache key.
    """
    key = recipe_key(platform, debs, epoch)
    store = cache.subdir("rootfs")
    final = store / f"{key}.tar"
    if final.is_file() and not fresh:
        meta = json.loads((store / f"{key}.json").read_text())
        return Rootfs(platform, final, meta["sha256"], key, meta["packages"], meta["seconds"], cached=True)
    check_emulation(platform)
    mmdebstrap = need("mmdebstrap", "mmdebstrap")
    ftparchive = need("apt-ftparchive", "apt-utils")
    import time

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{platform.slug}-", dir=store) as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for d in debs:
            src = cache.path_of(d.sha256, size=d.size, verify=True, name=d.filename)
            os.link(src, repo / d.filename)
        _run([ftparchive, "packages", "."], cwd=repo, out=repo / "Packages")
        _run([ftparchive, "-o", f"APT::FTPArchive::Release::Suite={suite}",
              "-o", f"APT::FTPArchive::Release::Codename={suite}", "release", "."], cwd=repo, out=Path(tmp) / "Release")
        shutil.move(Path(tmp) / "Release", repo / "Release")
        installed = Path(tmp) / "installed.txt"
        out = Path(tmp) / "rootfs.tar"
        argv = [mmdebstrap, "--mode=root", "--variant=essential", f"--architectures={platform.debian_arch}",
                f"--include={','.join(sorted(d.name for d in debs))}"]
        if any(d.name == "usr-is-merged" for d in debs):
            # usr-is-merged asserts a merged /usr; mmdebstrap's hook makes the symlinks first.
            # With usrmerge locked instead, its postinst does the merge itself.
            argv.append("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr")
        argv += [f"--dpkgopt={o}" for o in DPKG_OPTIONS]
        argv += [f"--customize-hook={h}" for h in CUSTOMIZE_HOOKS]
        argv += [
            f"--customize-hook=dpkg-query --admindir=\"$1/var/lib/dpkg\" -W "
            f"-f='${{Package}} ${{Version}} ${{Architecture}}\\n' > {installed}",
            suite, str(out), f"deb [trusted=yes] copy://{repo} ./",
        ]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        _run(argv, env=env)
        _compare_installed(installed, debs, platform)
        digest = sha256_file(out)
        seconds = round(time.monotonic() - start, 1)
        if fresh:
            kept = store / f"{key}.fresh-{os.getpid()}.tar"
            os.replace(out, kept)
            _compare_with_cached(store, key, kept, digest, platform)
            return Rootfs(platform, kept, digest, key, len(debs), seconds, cached=False)
        meta = {"sha256": digest, "packages": len(debs), "seconds": seconds, "arch": platform.debian_arch, "epoch": epoch}
        (store / f"{key}.json").write_text(json.dumps(meta, sort_keys=True))
        os.replace(out, final)  # last: a tar present means complete
    log.info("rootfs %s: %d packages in %.0f s, sha256 %s", platform, len(debs), seconds, digest[:16])
    return Rootfs(platform, final, digest, key, len(debs), seconds, cached=False)


def _compare_with_cached(store: Path, key: str, fresh: Path, digest: str, platform: Platform) -> None:
    """A remade base must equal the cached one byte for byte; otherwise name the first differing file."""
    meta = store / f"{key}.json"
    if not meta.is_file() or json.loads(meta.read_text())["sha256"] == digest:
        return
    from packager.errors import NotReproducible
    from packager.image.writer.oci import first_difference

    diff = first_difference(store / f"{key}.tar", fresh)
    fresh.unlink(missing_ok=True)
    raise NotReproducible(f"{platform}: remade base root filesystem differs from the cached one "
                          f"({json.loads(meta.read_text())['sha256'][:16]} vs {digest[:16]}): first difference {diff}")


def _compare_installed(listing: Path, debs: list[Deb], platform: Platform) -> None:
    want = {(d.name, d.version) for d in debs}
    got = set()
    for line in listing.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            got.add((parts[0], parts[1]))
    extra, missing = sorted(got - want), sorted(want - got)
    if extra or missing:
        raise BuildFailed(f"{platform}: installed set differs from the lock: "
                          f"not locked {[f'{n}={v}' for n, v in extra][:5]}, not installed {[f'{n}={v}' for n, v in missing][:5]}")


def _run(argv: list[str], *, cwd: Path | None = None, env: dict | None = None, out: Path | None = None) -> None:
    log.info("+ %s", " ".join(argv) if len(" ".join(argv)) < 400 else " ".join(argv)[:400] + " ...")
    stdout = open(out, "wb") if out else subprocess.PIPE
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    finally:
        if out:
            stdout.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-8:]
        raise BuildFailed(f"{Path(argv[0]).name} failed (exit {proc.returncode}): " + " | ".join(tail))
