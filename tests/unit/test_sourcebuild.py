"""Wheels built from a pinned sdist: the lock entry's format, the mismatch error, the canonical wheel container.

No compiler runs here (tests/integration/test_sourcebuild_cross.py cross-builds LoadGen
for real); the mismatch test gives ``ensure`` a cache in which the recipe's key
already maps to other bytes, which is exactly what a non-reproducing rebuild leaves.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from packager.cache import Cache
from packager.errors import CacheMissError, LockFileError, ReproductionMismatch
from packager.inputs import sourcebuild
from packager.inputs.lockfile import PlatformLock, WheelEntry, load_lock, locked_objects
from packager.inputs.sourcebuild import PinnedFile, SourceBuildLock
from packager.platforms import base_system

SHA = {c: c * 64 for c in "abcdef"}
BOOKWORM = base_system("bookworm")


def _recipe(**over) -> SourceBuildLock:
    doc = dict(
        recipe="setuptools-cross", recipe_version=1, target="linux/arm64", host="linux/amd64",
        sdist=PinnedFile(filename="demo-1.0.tar.gz", size=10, sha256=SHA["a"], url="https://files.example/demo-1.0.tar.gz"),
        build_requires=[PinnedFile(filename="setuptools-80.0-py3-none-any.whl", size=20, sha256=SHA["b"],
                                   url="https://files.example/setuptools-80.0-py3-none-any.whl")],
        target_debs=[PinnedFile(filename="libpython3.11-dev_3.11.2_arm64.deb", size=30, sha256=SHA["c"],
                                url="http://deb.debian.org/debian/libpython3.11-dev_3.11.2_arm64.deb")],
        toolchain={"g++-12-aarch64-linux-gnu": "12.2.0-14cross1"}, epoch=1700000000)
    doc.update(over)
    return SourceBuildLock(**doc)


def _built_entry(recipe: SourceBuildLock, sha: str = SHA["d"]) -> WheelEntry:
    return WheelEntry(name="demo", version="1.0", filename="demo-1.0-cp311-cp311-linux_aarch64.whl", size=40,
                      sha256=sha, requested=True, build=recipe)


# --- the lock entry ------------------------------------------------------------------------------


def test_downloaded_wheel_entry_has_no_build_key_and_built_one_no_url() -> None:
    downloaded = WheelEntry(name="demo", version="1.0", filename="demo-1.0-py3-none-any.whl", size=1, sha256=SHA["e"],
                            url="https://files.example/demo-1.0-py3-none-any.whl", requested=True)
    assert set(downloaded.model_dump(mode="json")) == {"name", "version", "filename", "size", "sha256", "url", "requested"}
    built = _built_entry(_recipe()).model_dump(mode="json")
    assert "url" not in built
    assert built["build"]["sdist"]["sha256"] == SHA["a"]
    assert built["build"]["toolchain"] == {"g++-12-aarch64-linux-gnu": "12.2.0-14cross1"}
    assert WheelEntry.model_validate(built) == _built_entry(_recipe())


@pytest.mark.parametrize("url, build", [(None, None), ("https://files.example/x.whl", "recipe")])
def test_wheel_entry_needs_exactly_one_origin(url, build) -> None:
    with pytest.raises(ValidationError, match="either a url or a build recipe"):
        WheelEntry(name="demo", version="1.0", filename="x.whl", size=1, sha256=SHA["e"], url=url, requested=True,
                   build=_recipe() if build else None)


def test_lock_with_a_built_wheel_round_trips_and_lists_its_inputs(tmp_path: Path) -> None:
    from packager.inputs.lockfile import (
        DebianLock,
        Lock,
        ModelLock,
        ModelSourceLock,
        PythonTarget,
    )

    plat = PlatformLock(debian=DebianLock(arch="arm64", suite="bookworm", sources=[], packages=[]), wheels=[_built_entry(_recipe())])
    lock = Lock(lock_version=1, generator="request-pack", artifact="demo", manifest_sha256=SHA["f"],
                model=ModelLock(sha256=SHA["f"], filename="m.onnx", source=ModelSourceLock(kind="file", path="m.onnx", sha256=SHA["f"], size=1)),
                templates={}, python=PythonTarget(), platforms={"linux/arm64": plat})
    path = tmp_path / "request.lock"
    path.write_bytes(lock.to_bytes())
    assert load_lock(path).to_bytes() == path.read_bytes()
    objs = {o.sha256: o for o in locked_objects(lock)}
    # the wheel has no url (fetch must not download it); its inputs have theirs
    assert objs[SHA["d"]].url is None
    assert {objs[s].url for s in (SHA["a"], SHA["b"], SHA["c"])} == {
        "https://files.example/demo-1.0.tar.gz", "https://files.example/setuptools-80.0-py3-none-any.whl",
        "http://deb.debian.org/debian/libpython3.11-dev_3.11.2_arm64.deb"}
    data = json.loads(path.read_text())
    data["platforms"]["linux/arm64"]["wheels"][0]["build"]["recipe"] = "cmake-cross"
    path.write_text(json.dumps(data))
    with pytest.raises(LockFileError) as e:
        load_lock(path)
    assert "platforms.linux/arm64.wheels.0.build.recipe" in str(e.value)


def test_recipe_key_ignores_urls_but_not_inputs_toolchain_or_target() -> None:
    base = _recipe()
    moved = _recipe(sdist=base.sdist.model_copy(update={"url": "https://mirror.example/demo-1.0.tar.gz"}))
    assert moved.key() == base.key()
    assert _recipe(toolchain={"g++-12-aarch64-linux-gnu": "12.2.0-15"}).key() != base.key()
    assert _recipe(target="linux/arm/v7").key() != base.key()
    assert _recipe(sdist=base.sdist.model_copy(update={"sha256": SHA["e"]})).key() != base.key()


# --- reuse and the mismatch error ----------------------------------------------------------------


def _cache_with_built(tmp_path: Path, recipe: SourceBuildLock, wheel_bytes: bytes) -> tuple[Cache, str]:
    """A cache in which a (re)build of ``recipe`` gave ``wheel_bytes``."""
    cache = Cache.open(tmp_path / "cache")
    sha = cache.put_bytes(wheel_bytes, name="demo-1.0-cp311-cp311-linux_aarch64.whl")
    (cache.subdir("sourcebuild") / f"{recipe.key()}.json").write_text(json.dumps(
        {"sha256": sha, "filename": "demo-1.0-cp311-cp311-linux_aarch64.whl", "size": len(wheel_bytes), "seconds": 1.0}))
    return cache, sha


def test_ensure_reuses_a_cached_wheel(tmp_path: Path) -> None:
    recipe = _recipe()
    cache, sha = _cache_with_built(tmp_path, recipe, b"the wheel")
    got = sourcebuild.ensure(cache, recipe, BOOKWORM, name="demo", version="1.0", expected_sha256=sha)
    assert got.cached and got.sha256 == sha and got.filename == "demo-1.0-cp311-cp311-linux_aarch64.whl"


def test_rebuilt_wheel_with_other_bytes_is_a_one_line_mismatch(tmp_path: Path) -> None:
    recipe = _recipe()
    cache, actual = _cache_with_built(tmp_path, recipe, b"what this machine built")
    locked = hashlib.sha256(b"what the locking machine built").hexdigest()
    with pytest.raises(ReproductionMismatch) as e:
        sourcebuild.ensure(cache, recipe, BOOKWORM, name="demo", version="1.0", expected_sha256=locked)
    msg = str(e.value)
    assert "\n" not in msg and e.value.return_code == 1
    assert msg.startswith("demo 1.0 for linux/arm64 rebuilt from demo-1.0.tar.gz: sha256 mismatch")
    assert locked in msg and actual in msg
    assert "toolchain" in msg


def test_missing_inputs_are_a_cache_miss_not_a_download(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path / "cache")
    with pytest.raises(CacheMissError, match="demo-1.0.tar.gz"):
        sourcebuild.build_wheel(cache, _recipe(), BOOKWORM, name="demo", version="1.0")


# --- the sdist and the wheel container -----------------------------------------------------------


def _sdist(path: Path, files: dict[str, str], mtime: int = 1700000000) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"demo-1.0/{name}")
            info.size, info.mtime = len(data), mtime
            tf.addfile(info, io.BytesIO(data))
    return path


def test_sdist_build_system_dependencies_and_epoch(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path / "cache")
    path = _sdist(tmp_path / "demo-1.0.tar.gz", {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=42", "pybind11==2.11.1"]\nbuild-backend = "setuptools.build_meta"\n',
        "PKG-INFO": "Metadata-Version: 2.2\nName: demo\nVersion: 1.0\nRequires-Dist: numpy>=1\nRequires-Dist: pytest; extra == 'test'\n\nbody\n"})
    assert sourcebuild._build_system(path) == ("setuptools.build_meta", ["setuptools>=42", "pybind11==2.11.1"])
    assert sourcebuild._sdist_epoch(path) == 1700000000
    sha = cache.put_file(path)
    sd = sourcebuild.Sdist("demo", "1.0", PinnedFile(filename=path.name, size=path.stat().st_size, sha256=sha, url="https://x/demo-1.0.tar.gz"))
    assert [str(r) for r in sourcebuild._sdist_dependencies(cache, sd)] == ["numpy>=1"]
    legacy = _sdist(tmp_path / "old-1.0.tar.gz", {"setup.py": "", "PKG-INFO": "Name: old\n"})
    assert sourcebuild._build_system(legacy)[0] == "setuptools.build_meta:__legacy__"


def _zip(path: Path, members: list[tuple[str, bytes, tuple, int]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data, when, mode in members:
            zi = zipfile.ZipInfo(name, date_time=when)
            zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return path


def test_normalised_wheel_depends_only_on_contents(tmp_path: Path) -> None:
    files = [("demo-1.0.dist-info/RECORD", b"r"), ("demo.so", b"\x7fELF"), ("demo-1.0.dist-info/WHEEL", b"w"), ("demo/__init__.py", b"")]
    a = _zip(tmp_path / "a.whl", [(n, d, (2020, 1, 1, 0, 0, 0), 0o100664) for n, d in files])
    b = _zip(tmp_path / "b.whl", [(n, d, (2024, 5, 6, 7, 8, 10), 0o100600) for n, d in reversed(files)])
    sourcebuild.normalise_wheel(a, tmp_path / "a2.whl", 1700000000)
    sourcebuild.normalise_wheel(b, tmp_path / "b2.whl", 1700000000)
    assert (tmp_path / "a2.whl").read_bytes() == (tmp_path / "b2.whl").read_bytes()
    with zipfile.ZipFile(tmp_path / "a2.whl") as zf:
        names = zf.namelist()
        assert names == ["demo.so", "demo/__init__.py", "demo-1.0.dist-info/WHEEL", "demo-1.0.dist-info/RECORD"]
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}
        assert zf.read("demo.so") == b"\x7fELF"
    sourcebuild.normalise_wheel(a, tmp_path / "a3.whl", 1700000001 + 86400)
    assert (tmp_path / "a3.whl").read_bytes() != (tmp_path / "a2.whl").read_bytes()
