"""Real resolution against deb.debian.org and PyPI for three platforms.

Uses the shared cache (``$REQUEST_PACK_CACHE`` or ``~/.cache/request-pack``),
so a second run is a warm re-lock; the build reads the same objects.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packager.cache import Cache
from packager.errors import UnsupportedPlatformError
from packager.inputs.lock import lock
from packager.inputs.lockfile import load_lock, locked_objects

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = [pytest.mark.network]


@pytest.fixture(scope="module")
def locked_twice(tmp_path_factory) -> tuple[Path, bytes, bytes, float, float]:
    art = tmp_path_factory.mktemp("lock") / "lock-basic"
    shutil.copytree(DATA / "lock-basic", art)
    cache = Cache.open()
    t0 = time.monotonic()
    lock(art, cache=cache)
    t1 = time.monotonic()
    first = (art / "request.lock").read_bytes()
    lock(art, cache=cache)
    t2 = time.monotonic()
    second = (art / "request.lock").read_bytes()
    print(f"\nlock: first {t1 - t0:.1f} s, re-lock {t2 - t1:.1f} s")
    return art, first, second, t1 - t0, t2 - t1


def test_locking_twice_gives_identical_bytes(locked_twice) -> None:
    _, first, second, _, _ = locked_twice
    assert first == second


def test_lock_content(locked_twice) -> None:
    art, first, _, _, _ = locked_twice
    current = load_lock(art / "request.lock")
    assert sorted(current.platforms) == ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    for key, arch in (("linux/amd64", "amd64"), ("linux/arm64", "arm64"), ("linux/arm/v7", "armhf")):
        pl = current.platforms[key]
        names = {d.name for d in pl.debian.packages}
        # the essential set, apt, and the requested package with its closure
        assert {"base-files", "dpkg", "libc6", "apt", "python3-numpy", "python3", "libblas3"} <= names
        assert all(d.architecture in (arch, "all") for d in pl.debian.packages)
        assert [d.name for d in pl.debian.packages] == sorted(d.name for d in pl.debian.packages)
    for key, tag in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        whl = {w.name: w for w in current.platforms[key].wheels}
        assert whl["onnxruntime"].version == "1.20.1" and whl["onnxruntime"].requested
        assert tag in whl["onnxruntime"].filename and "cp311" in whl["onnxruntime"].filename
        assert "numpy" in whl and not whl["numpy"].requested  # transitive closure
    assert current.platforms["linux/arm/v7"].wheels == []  # excluded by the marker
    assert b"/root" not in first and b"/tmp" not in first


def test_every_locked_file_is_cached_with_its_hash(locked_twice) -> None:
    art, _, _, _, _ = locked_twice
    cache = Cache.open()
    objs = locked_objects(load_lock(art / "request.lock"))
    assert len(objs) > 300
    for obj in objs:
        cache.path_of(obj.sha256, size=obj.size, verify=True, name=obj.name)


def test_frozen_passes_without_any_network(locked_twice) -> None:
    art, first, _, _, _ = locked_twice
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to prove --frozen is offline")
    # a fresh network namespace has no interfaces but loopback: any fetch would fail
    proc = subprocess.run(["unshare", "--net", sys.executable, "-m", "packager.cli", "lock", str(art), "--frozen"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (art / "request.lock").read_bytes() == first


def test_onnxruntime_on_armv7_fails_preflight_plainly(tmp_path: Path) -> None:
    art = tmp_path / "lock-armv7-unsupported"
    shutil.copytree(DATA / "lock-armv7-unsupported", art)
    with pytest.raises(UnsupportedPlatformError) as e:
        lock(art, cache=Cache.open())
    assert str(e.value).startswith("python.requirements: onnxruntime==1.20.1 has no wheel for linux/arm/v7: "
                                   'use framework "reference" on that platform or drop it')
    assert e.value.return_code == 2
    assert not (art / "request.lock").exists()


def _control(path: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-deb", "-f", str(path), "Package", "Depends", "Pre-Depends", "Provides", "Essential"],
                         capture_output=True, text=True, check=True).stdout
    fields, key = {}, None
    for line in out.splitlines():
        if line[:1].isspace() and key:
            fields[key] += " " + line.strip()
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _names(clause: str) -> list[str]:
    # "libc6 (>= 2.34) | libc6.1:any" -> ["libc6", "libc6.1"]
    return [alt.strip().split(" ")[0].split(":")[0] for alt in clause.split("|")]


def test_debian_set_is_closed_under_depends_and_pre_depends(locked_twice) -> None:
    """What mmdebstrap will need from the flat repository, checked from the .debs themselves."""
    art, _, _, _, _ = locked_twice
    cache = Cache.open()
    current = load_lock(art / "request.lock")
    for key, pl in current.platforms.items():
        controls = [_control(cache.path_of(d.sha256, name=d.filename)) for d in pl.debian.packages]
        provided = {c["Package"] for c in controls}
        for c in controls:
            provided |= {p.strip().split(" ")[0] for p in c.get("Provides", "").split(",") if p.strip()}
        for c in controls:
            for fld in ("Pre-Depends", "Depends"):
                for clause in filter(None, (x.strip() for x in c.get(fld, "").split(","))):
                    assert set(_names(clause)) & provided, f"{key}: {c['Package']} {fld} {clause!r} is not in the locked set"
        assert all(c["Package"] in {d.name for d in pl.debian.packages} for c in controls)
