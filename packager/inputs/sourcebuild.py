"""Wheels built from a pinned sdist where PyPI has no wheel for a platform, by cross-compiling.

MLCommons LoadGen (``mlcommons-loadgen``) publishes x86_64 wheels only. For a
top-level requirement that pip cannot satisfy with a wheel on arm64 or armv7,
``lock`` looks for its sdist on PyPI; if the sdist builds with setuptools (the
``setuptools-cross`` recipe, which covers pybind11/setuptools C++ extensions),
the wheel is built here on the amd64 host with Debian's cross compilers
(``g++-aarch64-linux-gnu``, ``g++-arm-linux-gnueabihf``) against the target's
own Python headers and sysconfigdata, unpacked from the target's
``libpython3.X-dev`` and ``libpython3.X-minimal`` .debs (3.X and the compiler
version come from the manifest's suite, ``platforms.BaseSystem``). About a
minute per architecture, against about ten under QEMU.

What the lock records (``SourceBuildLock``, inside the wheel's entry): the
sdist (url, sha256), the build backend's requirements as exact host wheels
(url, sha256), the two target .debs (url, sha256), the host toolchain's Debian
package versions, and the resulting wheel's sha256. The host toolchain is
recorded rather than pinned by hash: it is the machine's compiler, installed
by ``scripts/setup.sh``. A rebuild that gives other bytes is an error that
says whether the toolchain differs from the recorded one.

The PEP 517 backend runs in the suite's python3.X on the host, driven by
pyproject-hooks (``BuildBackendHookCaller``, which runs its own small script
in that interpreter, so nothing of this venv is imported there).

Reproducibility: SOURCE_DATE_EPOCH is the sdist's newest member time;
``datetime.now()`` returns it inside the build (LoadGen stamps its build date
into the module; a ``sitecustomize`` on the build's PYTHONPATH freezes the
clock before the backend is imported); the temporary build tree is mapped to ``/build`` by
``-ffile-prefix-map``; no debug info; and the wheel is rewritten with sorted
entries, fixed times and modes and no compression (zlib's output may differ
between zlib versions; the image layer is compressed anyway).

Built wheels live in the content-addressed cache; ``sourcebuild/<key>.json``
maps the key (recipe, input hashes, toolchain versions, target) to the wheel's
sha256, so a re-lock or a fetch reuses it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, Field, model_serializer
from pyproject_hooks import BuildBackendHookCaller

from packager.cache import Cache
from packager.errors import (
    BuildFailed,
    NoWheelError,
    ReproductionMismatch,
    ToolMissing,
)
from packager.inputs import debian, download, pypi, wheels
from packager.platforms import BaseSystem, Platform

log = logging.getLogger(__name__)

RECIPE = "setuptools-cross"
RECIPE_VERSION = 1
HOST = Platform.AMD64
# The backends this recipe knows how to point at a cross compiler.
BACKENDS = ("setuptools.build_meta", "setuptools.build_meta:__legacy__")

_TRIPLET = {Platform.AMD64: "x86_64-linux-gnu", Platform.ARM64: "aarch64-linux-gnu", Platform.ARMV7: "arm-linux-gnueabihf"}
_CROSS_SUFFIX = {Platform.AMD64: "amd64", Platform.ARM64: "arm64-cross", Platform.ARMV7: "armhf-cross"}
_HOST_PLATFORM = {Platform.AMD64: "linux-x86_64", Platform.ARM64: "linux-aarch64", Platform.ARMV7: "linux-armv7l"}
_Sha256 = Field(pattern=r"^[0-9a-f]{64}$")


# --- wire format (embedded in lock.WheelEntry.build) ----------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinnedFile(_Wire):
    filename: str
    size: int = Field(ge=0)
    sha256: str = _Sha256
    url: str
    locations: list[str] | None = Field(
        None, description="where else the same bytes are served, tried in order after url (a target .deb: Debian's "
                          "snapshot service by content); absent in locks made before it was recorded")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler):  # type: ignore[no-untyped-def]
        # a lock made before locations were recorded keeps its bytes
        return {k: v for k, v in handler(self).items() if not (k == "locations" and v is None)}


class SourceBuildLock(_Wire):
    recipe: Literal["setuptools-cross"]
    recipe_version: int
    target: str
    host: str
    sdist: PinnedFile
    build_requires: list[PinnedFile] = Field(description="the build backend's requirements, exact wheels for the host")
    target_debs: list[PinnedFile] = Field(description="the target's Python headers and sysconfigdata")
    toolchain: dict[str, str] = Field(description="host Debian packages and versions (recorded, not hash-pinned)")
    epoch: int = Field(description="SOURCE_DATE_EPOCH of the build: the sdist's newest member time")

    def inputs(self) -> list[PinnedFile]:
        return [self.sdist, *self.build_requires, *self.target_debs]

    def key(self) -> str:
        doc = self.model_dump(mode="json")
        for f in ("sdist", "build_requires", "target_debs"):  # urls do not change the bytes
            doc[f] = [x["sha256"] for x in (doc[f] if isinstance(doc[f], list) else [doc[f]])]
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Sdist:
    name: str
    version: str
    file: PinnedFile


@dataclass(frozen=True)
class BuiltWheel:
    name: str
    version: str
    filename: str
    sha256: str
    size: int
    seconds: float
    cached: bool


# --- resolving: which requirements need a source build ---------------------------------------------


def host_python(system: BaseSystem) -> str:
    """The host's interpreter of the suite's Python version: it runs the build backend."""
    return f"/usr/bin/{system.python_exe}"


def target_debs(system: BaseSystem) -> tuple[str, str]:
    """The target's Python headers and its sysconfigdata."""
    return f"lib{system.python_exe}-dev", f"lib{system.python_exe}-minimal"


def resolve(cache: Cache, platform: Platform, system: BaseSystem,
            requirements: list[Requirement]) -> tuple[list[wheels.Wheel], list[Sdist]]:
    """Wheels for the requirements pip can satisfy, plus the sdists of the top-level ones it cannot.

    A top-level requirement without a wheel for ``platform`` is taken from its
    sdist when this recipe can build it; otherwise pip's error stands.
    """
    remaining = list(requirements)
    sdists: list[Sdist] = []
    while True:
        try:
            return wheels.resolve(cache, platform, system, remaining), sdists
        except NoWheelError as e:
            req = next((r for r in remaining if canonicalize_name(r.name) == e.requirement), None)
            if req is None or platform not in _TRIPLET:
                raise
            sdist = find_sdist(cache, req)
            if sdist is None:
                raise
            log.info("%s %s has no wheel for %s: building it from %s", sdist.name, sdist.version, platform, sdist.file.filename)
            sdists.append(sdist)
            remaining = [r for r in remaining if r is not req] + _sdist_dependencies(cache, sdist)


def find_sdist(cache: Cache, req: Requirement) -> Sdist | None:
    """The pinned version's sdist on PyPI if this recipe can build it (setuptools backend), else None."""
    version = next(iter(req.specifier)).version
    name = canonicalize_name(req.name)
    files = pypi.project_files(name, field="python.requirements")
    stem = f"{name.replace('-', '_')}-{version}.tar.gz"
    for f in files:
        if f.get("filename", "").lower() in (stem, f"{name}-{version}.tar.gz") and f.get("hashes", {}).get("sha256"):
            pinned = PinnedFile(filename=f["filename"], size=int(f.get("size") or 0), sha256=f["hashes"]["sha256"], url=f["url"])
            path = download.fetch(cache, pinned.sha256, [pinned.url], name=pinned.filename)
            pinned = pinned.model_copy(update={"size": path.stat().st_size})
            backend, _ = _build_system(path)
            if backend not in BACKENDS:
                log.info("%s: build backend %s is not one the %s recipe drives", pinned.filename, backend, RECIPE)
                return None
            return Sdist(name=name, version=version, file=pinned)
    return None


def _sdist_members(path: Path) -> tuple[tarfile.TarFile, str]:
    tf = tarfile.open(path, "r:gz")
    top = tf.getnames()[0].split("/")[0]
    return tf, top


def _build_system(path: Path) -> tuple[str, list[str]]:
    """(build-backend, requires) of an sdist; setuptools' legacy defaults when it has no pyproject.toml."""
    tf, top = _sdist_members(path)
    with tf:
        try:
            data = tomllib.loads(tf.extractfile(f"{top}/pyproject.toml").read().decode())  # type: ignore[union-attr]
        except KeyError:
            return "setuptools.build_meta:__legacy__", ["setuptools>=40.8.0"]
    bs = data.get("build-system", {})
    return bs.get("build-backend", "setuptools.build_meta:__legacy__"), list(bs.get("requires", ["setuptools>=40.8.0"]))


def _sdist_dependencies(cache: Cache, sdist: Sdist) -> list[Requirement]:
    """Requires-Dist of the sdist's PKG-INFO (metadata 2.2 makes it static unless listed Dynamic)."""
    tf, top = _sdist_members(cache.path_of(sdist.file.sha256, name=sdist.file.filename))
    with tf:
        text = tf.extractfile(f"{top}/PKG-INFO").read().decode()  # type: ignore[union-attr]
    reqs = []
    for line in text.split("\n\n", 1)[0].splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or "extra" not in str(req.marker):
                reqs.append(req)
    return reqs


def _sdist_epoch(path: Path) -> int:
    tf, _ = _sdist_members(path)
    with tf:
        return max(int(m.mtime) for m in tf.getmembers())


def plan(cache: Cache, platform: Platform, sdist: Sdist, system: BaseSystem, *, mirror: str) -> SourceBuildLock:
    """Pin everything the build reads: the sdist, its backend's requirements, the target's Python .debs."""
    _check_host()
    sdist_path = cache.path_of(sdist.file.sha256, name=sdist.file.filename)
    _, requires = _build_system(sdist_path)
    host_wheels = wheels.resolve(cache, HOST, system, [Requirement(r) for r in requires])
    for w in host_wheels:
        download.fetch(cache, w.sha256, [w.url], name=w.filename)
    names = target_debs(system)
    res = debian.resolve(cache, platform.debian_arch, mirror, system.suite, list(names), update=False)
    debs = [d for d in res.packages if d.name in names]
    for d in debs:
        download.fetch(cache, d.sha256, [d.url], name=d.filename, size=d.size)
    return SourceBuildLock(
        recipe=RECIPE, recipe_version=RECIPE_VERSION, target=platform.value, host=HOST.value, sdist=sdist.file,
        build_requires=[PinnedFile(filename=w.filename, size=cache.object_path(w.sha256).stat().st_size, sha256=w.sha256,
                                   url=w.url) for w in host_wheels],
        target_debs=sorted((PinnedFile(filename=d.filename, size=d.size, sha256=d.sha256, url=d.url,
                                       locations=debian.snapshot_locations(cache.object_path(d.sha256))) for d in debs),
                           key=lambda f: f.filename),
        toolchain=toolchain_versions(platform, system), epoch=_sdist_epoch(sdist_path))


# --- the toolchain --------------------------------------------------------------------------------


def toolchain_packages(platform: Platform, system: BaseSystem) -> list[str]:
    t, s, gcc, py = _TRIPLET[platform], _CROSS_SUFFIX[platform], system.gcc, system.python_exe
    if platform is HOST:
        return ["binutils-x86-64-linux-gnu", f"g++-{gcc}", f"gcc-{gcc}", "libc6-dev", f"libstdc++-{gcc}-dev", py]
    return [f"binutils-{t}", f"g++-{gcc}-{t}", f"gcc-{gcc}-{t}", f"libc6-dev-{s}", f"libstdc++-{gcc}-dev-{s}", py]


def toolchain_versions(platform: Platform, system: BaseSystem) -> dict[str, str]:
    """Installed versions of the host packages the build runs; ToolMissing names what to install."""
    pkgs = toolchain_packages(platform, system)
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status} ${Version}\\n", *pkgs],
                          capture_output=True, text=True)
    found = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "installed":
            found[parts[0].split(":")[0]] = parts[2]
    missing = [p for p in pkgs if p not in found]
    if missing:
        meta = f"g++-{_TRIPLET[platform]}" if platform is not HOST else "g++"
        raise ToolMissing(f"the cross toolchain for {platform} is not installed ({', '.join(missing)})",
                          fix=f"apt-get install -y {meta} {system.python_exe} (or scripts/setup.sh)")
    return dict(sorted(found.items()))


def _check_host() -> None:
    if Platform.native() is not HOST:
        raise ToolMissing(f"the {RECIPE} recipe runs on {HOST} hosts (Debian's cross compilers); this is {Platform.native()}")


# --- building --------------------------------------------------------------------------------------


def ensure(cache: Cache, build: SourceBuildLock, system: BaseSystem, *, name: str, version: str,
           expected_sha256: str) -> BuiltWheel:
    """The locked wheel, from the cache or rebuilt from the cached inputs; ReproductionMismatch if it differs."""
    if cache.has(expected_sha256):
        path = cache.object_path(expected_sha256)
        return BuiltWheel(name, version, _wheel_name(cache, expected_sha256), expected_sha256, path.stat().st_size, 0.0, cached=True)
    built = build_wheel(cache, build, system, name=name, version=version)
    if built.sha256 != expected_sha256:
        try:
            here = toolchain_versions(Platform(build.target), system)
        except ToolMissing:
            here = {}
        diff = sorted(k for k in set(here) | set(build.toolchain) if here.get(k) != build.toolchain.get(k))
        hint = (f"the toolchain differs from the locked one ({', '.join(f'{k} {build.toolchain.get(k)} -> {here.get(k)}' for k in diff)})"
                if diff else "same toolchain versions: the build is not reproducible")
        raise ReproductionMismatch(f"{name} {version} for {build.target} rebuilt from {build.sdist.filename}",
                                   expected_sha256, built.sha256, hint=hint)
    return built


def _wheel_name(cache: Cache, sha256: str) -> str:
    names = [n for n in cache.describe(sha256).get("names", []) if n.endswith(".whl")]
    return names[0] if names else sha256


def build_wheel(cache: Cache, build: SourceBuildLock, system: BaseSystem, *, name: str, version: str) -> BuiltWheel:
    """Build (or reuse by key) the wheel; inputs come from the cache only (CacheMissError if absent)."""
    platform = Platform(build.target)
    index = cache.subdir("sourcebuild") / f"{build.key()}.json"
    if index.is_file():
        meta = json.loads(index.read_text())
        if cache.has(meta["sha256"]):
            return BuiltWheel(name, version, meta["filename"], meta["sha256"], meta["size"], meta["seconds"], cached=True)
    inputs = {f.sha256: cache.path_of(f.sha256, size=f.size, verify=True, name=f.filename) for f in build.inputs()}
    _check_host()
    here = toolchain_versions(platform, system)
    if here != build.toolchain:
        log.warning("%s: host toolchain %s differs from the locked %s; the wheel may differ", name, here, build.toolchain)
    triplet = _TRIPLET[platform]
    for tool in (f"{triplet}-gcc", f"{triplet}-g++"):
        if shutil.which(tool) is None:
            raise ToolMissing(f"{tool} is not installed", fix=f"apt-get install -y g++-{triplet}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sourcebuild-", dir=cache.subdir("tmp")) as tmp:
        work = Path(tmp)
        src = _unpack_sdist(inputs[build.sdist.sha256], work / "src")
        site = work / "site"
        for f in build.build_requires:
            with zipfile.ZipFile(inputs[f.sha256]) as zf:
                zf.extractall(site)
        target = work / "target"
        for f in build.target_debs:
            _run(["dpkg-deb", "-x", str(inputs[f.sha256]), str(target)])
        shim = work / "shim"
        shim.mkdir()
        sysconfig_name = f"_sysconfigdata__{triplet}"  # in libpython3.X-minimal; the _linux_ alias is a symlink elsewhere
        shutil.copy(target / "usr/lib" / system.python_exe / f"{sysconfig_name}.py", shim)
        # Debian's own sitecustomize only hooks apport, which a build does not want either
        (shim / "sitecustomize.py").write_text(_FROZEN_CLOCK)
        out = work / "dist"
        out.mkdir()
        env = _build_env(work, shim, site, target, platform, system, sysconfig_name, build.epoch)
        backend, _ = _build_system(inputs[build.sdist.sha256])
        hooks = BuildBackendHookCaller(str(src), backend, python_executable=host_python(system), runner=_runner(env))
        log.info("+ %s: %s.build_wheel (%s)", host_python(system), backend, src.name)
        try:
            hooks.build_wheel(str(out))
        except subprocess.CalledProcessError as e:
            tail = (e.stderr or e.stdout or "").strip().splitlines()[-8:]
            raise BuildFailed(f"{build.sdist.filename}: the build backend failed (exit {e.returncode}): " + " | ".join(tail)) from None
        built = sorted(out.glob("*.whl"))
        if len(built) != 1:
            raise BuildFailed(f"{build.sdist.filename}: the build made {len(built)} wheels, expected one")
        normalised = work / built[0].name
        normalise_wheel(built[0], normalised, build.epoch)
        sha = cache.put_file(normalised, name=built[0].name)
        size = normalised.stat().st_size
    seconds = round(time.monotonic() - start, 1)
    meta = {"sha256": sha, "filename": built[0].name, "size": size, "seconds": seconds, "target": build.target}
    tmp_index = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    tmp_index.write_text(json.dumps(meta, sort_keys=True) + "\n")
    os.replace(tmp_index, index)
    log.info("built %s for %s in %.0f s: sha256 %s", built[0].name, platform, seconds, sha[:16])
    return BuiltWheel(name, version, built[0].name, sha, size, seconds, cached=False)


def _unpack_sdist(path: Path, dest: Path) -> Path:
    with tarfile.open(path, "r:gz") as tf:
        tf.extractall(dest, filter="data")
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise BuildFailed(f"{path.name}: expected one top-level directory in the sdist")
    return tops[0]


def _build_env(work: Path, shim: Path, site: Path, target: Path, platform: Platform, system: BaseSystem,
               sysconfig_name: str, epoch: int) -> dict[str, str]:
    triplet = _TRIPLET[platform]
    flags = (f"-I{target}/usr/include/{system.python_exe} -I{target}/usr/include "
             f"-ffile-prefix-map={work}=/build -g0")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": str(epoch),
        "PYTHONPATH": f"{shim}{os.pathsep}{site}",
        "PYTHONNOUSERSITE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # the target interpreter's build configuration, read by sysconfig and setuptools
        "_PYTHON_SYSCONFIGDATA_NAME": sysconfig_name,
        "_PYTHON_HOST_PLATFORM": _HOST_PLATFORM[platform],
        "CC": f"{triplet}-gcc",
        "CXX": f"{triplet}-g++",
        "LDSHARED": f"{triplet}-g++ -shared",
        "CFLAGS": flags,
        "CXXFLAGS": flags,
        "LDFLAGS": "-s",
        "MAX_JOBS": "1",
    }
    return env


def _runner(env: dict[str, str]):
    """pyproject-hooks' runner with the build's whole environment, not this process's plus extras."""
    def run(cmd: list[str], cwd: str | None = None, extra_environ: dict[str, str] | None = None) -> None:
        # -s: the user's site-packages never reach the build
        argv = [cmd[0], "-s", *cmd[1:]]
        proc = subprocess.run(argv, cwd=cwd, env={**env, **(extra_environ or {})}, capture_output=True, text=True)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return run


# sitecustomize.py of the build: Python imports it at start-up, before the backend, in the host's python3.X.
_FROZEN_CLOCK = r"""
import datetime, os
_epoch = int(os.environ["SOURCE_DATE_EPOCH"])
class _Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.fromtimestamp(_epoch, tz) if tz else datetime.datetime.utcfromtimestamp(_epoch)
    @classmethod
    def utcnow(cls):
        return datetime.datetime.utcfromtimestamp(_epoch)
    @classmethod
    def today(cls):
        return cls.now()
datetime.datetime = _Frozen
"""


def normalise_wheel(src: Path, dest: Path, epoch: int) -> None:
    """Same files, canonical container: sorted (dist-info last, RECORD last), fixed times and modes, stored."""
    stamp = time.gmtime(max(epoch, 315532800))[:6]  # zip times start in 1980
    with zipfile.ZipFile(src) as zin:
        infos = [i for i in zin.infolist() if not i.is_dir()]
        def order(i: zipfile.ZipInfo) -> tuple:
            top = i.filename.split("/")[0]
            return (top.endswith(".dist-info"), i.filename.endswith(".dist-info/RECORD"), i.filename)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zout:
            for info in sorted(infos, key=order):
                executable = (info.external_attr >> 16) & 0o111
                zi = zipfile.ZipInfo(str(PurePosixPath(info.filename)), date_time=stamp)
                zi.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
                zi.create_system = 3
                zi.compress_type = zipfile.ZIP_STORED
                zout.writestr(zi, zin.read(info))
    dest.write_bytes(buf.getvalue())


def _run(argv: list[str], *, cwd: Path | None = None, env: dict | None = None) -> None:
    log.info("+ %s", " ".join(argv[:3]) + (" ..." if len(argv) > 3 else ""))
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise BuildFailed(f"{Path(argv[0]).name} failed (exit {proc.returncode}): " + " | ".join(tail))
