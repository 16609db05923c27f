"""The lock file: deterministic bytes, staleness, malformed input, and the offline --frozen check.

These tests build a lock from small local files (served by file:// URLs) instead
of resolving against Debian and PyPI; tests/integration/test_lock_resolve.py
does the real resolution.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.cache import Cache
from packager.errors import (
    CacheMissError,
    IntegrityError,
    LockFileError,
    StaleLockError,
    UnpinnedInputError,
)
from packager.inputs.lock import _write_if_changed, fetch, lock
from packager.inputs.lockfile import (
    AptSourceEntry,
    ConversionLock,
    DebEntry,
    DebianLock,
    Lock,
    ModelLock,
    ModelSourceLock,
    PlatformLock,
    PythonTarget,
    WheelEntry,
    dataset_pins,
    load_lock,
    locked_objects,
    template_hashes,
)
from packager.manifest import load_manifest
from packager.platforms import Platform

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "lock-basic"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def locked(tmp_path: Path) -> tuple[Path, Cache, Lock]:
    """An artifact dir with a lock whose every file is in a fresh cache."""
    art = tmp_path / "art"
    shutil.copytree(FIXTURE, art)
    cache = Cache.open(tmp_path / "cache")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    manifest = load_manifest(art)
    model_sha = cache.put_file(art / "model.onnx", manifest.model.sha256)
    platforms = {}
    for plat in manifest.platforms:
        debs = []
        for name in ("libc6", "python3"):
            data = f"{name} for {plat.debian_arch}\n".encode()
            f = mirror / f"{name}_1.0_{plat.debian_arch}.deb"
            f.write_bytes(data)
            cache.put_file(f)
            debs.append(DebEntry(name=name, version="1.0", architecture=plat.debian_arch, filename=f.name,
                                 size=len(data), sha256=_sha(data), url=f.as_uri()))
        wheels = []
        if plat.debian_arch != "armhf":
            data = f"wheel for {plat.value}\n".encode()
            f = mirror / f"demo-1.0-py3-none-{plat.debian_arch}.whl"
            f.write_bytes(data)
            cache.put_file(f)
            wheels.append(WheelEntry(name="demo", version="1.0", filename=f.name, size=len(data), sha256=_sha(data),
                                     url=f.as_uri(), requested=True))
        platforms[plat.value] = PlatformLock(
            debian=DebianLock(arch=plat.debian_arch, suite="bookworm",
                              sources=[AptSourceEntry(url="http://deb.debian.org/debian", suite="bookworm", component="main")],
                              packages=debs),
            wheels=wheels)
    model = ModelLock(sha256=model_sha, filename="model.onnx",
                      source=ModelSourceLock(kind="file", path="model.onnx", sha256=model_sha, size=(art / "model.onnx").stat().st_size))
    current = Lock(lock_version=1, generator="request-pack", artifact=manifest.name, manifest_sha256=manifest.digest(),
                   model=model, templates=template_hashes(), python=PythonTarget(), platforms=platforms)
    (art / "request.lock").write_bytes(current.to_bytes())
    return art, cache, current


# --- determinism ---------------------------------------------------------------------------


def test_same_lock_gives_same_bytes(locked, tmp_path: Path) -> None:
    art, _, current = locked
    first = (art / "request.lock").read_bytes()
    assert _write_if_changed(art / "request.lock", current.to_bytes()) is False
    reparsed = load_lock(art / "request.lock")
    assert reparsed == current
    assert reparsed.to_bytes() == first
    assert first.endswith(b"}\n") and b"\n  \"artifact\"" in first
    assert str(tmp_path).encode() not in first.replace(str(tmp_path / "mirror").encode(), b"")
    data = json.loads(first)
    assert list(data) == sorted(data)


def test_dict_order_does_not_change_bytes(locked) -> None:
    _, _, current = locked
    shuffled = current.model_copy(update={"platforms": dict(reversed(list(current.platforms.items())))})
    assert shuffled.to_bytes() == current.to_bytes()


# --- --frozen ------------------------------------------------------------------------------


def test_frozen_passes_when_everything_is_cached(locked) -> None:
    art, cache, current = locked
    result = lock(art, frozen=True, cache=cache)
    assert result.frozen and not result.changed
    assert [s.platform for s in result.summary] == sorted(current.platforms)


def test_frozen_missing_lock_is_bad_input_naming_the_file(locked) -> None:
    art, cache, _ = locked
    (art / "request.lock").unlink()
    with pytest.raises(LockFileError) as e:
        lock(art, frozen=True, cache=cache)
    assert str(art / "request.lock") in str(e.value)
    assert e.value.return_code == 2


def test_frozen_detects_a_changed_manifest(locked) -> None:
    art, cache, _ = locked
    text = (art / "request.yaml").read_text()
    (art / "request.yaml").write_text(text.replace("version: 0.1.0", "version: 0.1.1"))
    with pytest.raises(StaleLockError) as e:
        lock(art, frozen=True, cache=cache)
    assert "stale" in str(e.value) and e.value.return_code == 1


def test_frozen_detects_a_platform_missing_from_the_lock(locked) -> None:
    art, cache, current = locked
    partial = current.model_copy(update={"platforms": {k: v for k, v in current.platforms.items() if k != "linux/arm/v7"}})
    (art / "request.lock").write_bytes(partial.to_bytes())
    with pytest.raises(StaleLockError, match="linux/arm/v7"):
        lock(art, frozen=True, cache=cache)


def test_frozen_detects_changed_templates(locked) -> None:
    art, cache, current = locked
    other = current.model_copy(update={"templates": {**current.templates, "dockerfiles/gone.j2": "0" * 64}})
    (art / "request.lock").write_bytes(other.to_bytes())
    with pytest.raises(StaleLockError, match="dockerfiles/gone.j2"):
        lock(art, frozen=True, cache=cache)


def test_frozen_compares_the_lock_with_the_templates_it_is_given(locked, tmp_path) -> None:
    # reproduce: the archive's Dockerfile template, not the checkout's, is the one an archived lock was made with
    from packager.inputs.lock import check_frozen
    from packager.manifest import load_manifest

    art, cache, current = locked
    theirs = tmp_path / "archived" / "dockerfiles"
    theirs.mkdir(parents=True)
    (theirs / "Dockerfile.j2").write_text("FROM scratch  # the template of another checkout\n")
    plats = [Platform(k) for k in current.platforms]
    with pytest.raises(StaleLockError, match="dockerfiles/Dockerfile.j2"):
        check_frozen(load_manifest(art), art / "request.lock", cache, plats, template_dir=theirs)
    (art / "request.lock").write_bytes(current.model_copy(update={"templates": template_hashes(theirs)}).to_bytes())
    assert check_frozen(load_manifest(art), art / "request.lock", cache, plats, template_dir=theirs).frozen
    with pytest.raises(StaleLockError, match="dockerfiles/Dockerfile.j2"):  # and then this checkout's is the other one
        lock(art, frozen=True, cache=cache)


def test_frozen_names_a_file_missing_from_the_cache(locked) -> None:
    art, cache, current = locked
    deb = current.platforms["linux/arm64"].debian.packages[0]
    cache.object_path(deb.sha256).unlink()
    with pytest.raises(CacheMissError) as e:
        lock(art, frozen=True, cache=cache)
    assert deb.filename in str(e.value)


def test_frozen_names_a_corrupt_cache_file(locked) -> None:
    art, cache, current = locked
    wheel = current.platforms["linux/amd64"].wheels[0]
    path = cache.object_path(wheel.sha256)
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as e:
        lock(art, frozen=True, cache=cache)
    assert wheel.filename in str(e.value)


def test_frozen_for_one_platform_ignores_the_others(locked) -> None:
    from packager.platforms import Platform

    art, cache, current = locked
    cache.object_path(current.platforms["linux/arm/v7"].debian.packages[0].sha256).unlink()
    lock(art, frozen=True, cache=cache, platforms=[Platform.AMD64])
    with pytest.raises(CacheMissError):
        lock(art, frozen=True, cache=cache)


# --- the frozen check never builds; materialise does ------------------------------------------


def _with_built_wheel(locked, *, rebuild_gives: bytes) -> tuple[Path, Cache, Lock, WheelEntry]:
    """The fixture with an arm64 wheel cross-built from its sdist, absent from the cache, its inputs present.

    The recipe's sourcebuild index maps its key to ``rebuild_gives``: what a
    rebuild on this machine yields (no compiler runs in a unit test).
    """
    from packager.inputs.sourcebuild import PinnedFile, SourceBuildLock

    art, cache, current = locked
    inputs = {}
    for name in ("demo-1.0.tar.gz", "setuptools-80.0-py3-none-any.whl", "libpython3.11-dev_3.11.2_arm64.deb"):
        data = f"{name} bytes".encode()
        inputs[name] = PinnedFile(filename=name, size=len(data), sha256=cache.put_bytes(data, name=name), url=f"https://files.example/{name}")
    recipe = SourceBuildLock(recipe="setuptools-cross", recipe_version=1, target="linux/arm64", host="linux/amd64",
                             sdist=inputs["demo-1.0.tar.gz"], build_requires=[inputs["setuptools-80.0-py3-none-any.whl"]],
                             target_debs=[inputs["libpython3.11-dev_3.11.2_arm64.deb"]],
                             toolchain={"g++-12-aarch64-linux-gnu": "12.2.0-14cross1"}, epoch=1700000000)
    locked_wheel = b"the wheel the locking machine built"
    entry = WheelEntry(name="demo-ext", version="1.0", filename="demo_ext-1.0-cp311-cp311-linux_aarch64.whl",
                       size=len(locked_wheel), sha256=_sha(locked_wheel), requested=True, build=recipe)
    arm = current.platforms["linux/arm64"]
    current = current.model_copy(update={"platforms": {**current.platforms,
                                                       "linux/arm64": arm.model_copy(update={"wheels": [*arm.wheels, entry]})}})
    (art / "request.lock").write_bytes(current.to_bytes())
    rebuilt = cache.put_bytes(rebuild_gives, name=entry.filename)
    (cache.subdir("sourcebuild") / f"{recipe.key()}.json").write_text(json.dumps(
        {"sha256": rebuilt, "filename": entry.filename, "size": len(rebuild_gives), "seconds": 1.0}))
    return art, cache, load_lock(art / "request.lock"), entry


def test_frozen_check_names_a_missing_built_wheel_and_never_builds_it(locked) -> None:
    art, cache, current, entry = _with_built_wheel(locked, rebuild_gives=b"what this machine would build")
    index = sorted(cache.subdir("sourcebuild").iterdir())
    # a rebuild would end in ReproductionMismatch; the check must stop at the cache miss instead
    with pytest.raises(CacheMissError) as e:
        lock(art, frozen=True, cache=cache)
    msg = str(e.value)
    assert msg.startswith(f"linux/arm64 wheel {entry.filename} is not in the cache")
    assert f"built from its locked sdist by `request-pack fetch {art}`" in msg
    assert not cache.has(entry.sha256) and sorted(cache.subdir("sourcebuild").iterdir()) == index
    # the other platforms do not need it
    lock(art, frozen=True, cache=cache, platforms=[Platform.AMD64, Platform.ARMV7])


def test_materialise_rebuilds_the_missing_wheel_and_compares_it_with_the_lock(locked) -> None:
    from packager.errors import ReproductionMismatch
    from packager.inputs.materialise import materialise

    art, cache, current, entry = _with_built_wheel(locked, rebuild_gives=b"what this machine would build")
    manifest = load_manifest(art)
    with pytest.raises(ReproductionMismatch, match=f"demo-ext 1.0 for linux/arm64 rebuilt from demo-1.0.tar.gz: sha256 mismatch: expected {entry.sha256}"):
        materialise(manifest, current, cache, [Platform.ARM64])
    # platforms without built wheels need nothing made
    report = materialise(manifest, current, cache, [Platform.AMD64])
    assert report.nothing_to_do and report.present == ()


def test_materialise_with_everything_cached_makes_nothing_and_the_check_passes(locked) -> None:
    from packager.inputs.materialise import materialise

    art, cache, current, entry = _with_built_wheel(locked, rebuild_gives=b"the wheel the locking machine built")
    manifest = load_manifest(art)
    report = materialise(manifest, current, cache, list(manifest.platforms))
    assert report.nothing_to_do and report.present == (f"linux/arm64 wheel {entry.filename}",)
    lock(art, frozen=True, cache=cache)


def test_materialise_refuses_a_lock_of_another_manifest(locked) -> None:
    from packager.inputs.materialise import materialise

    art, cache, current = locked
    other = load_manifest(art).model_copy(update={"version": "9.9"})
    with pytest.raises(StaleLockError, match="request-pack lock"):
        materialise(other, current, cache, [Platform.AMD64])


def test_frozen_check_names_the_convert_command_for_a_missing_converted_model(locked) -> None:
    art, cache, current = locked
    text = (art / "request.yaml").read_text()
    text = text.replace("framework:", "  conversion:\n    recipe: pytorch-seeded-to-onnx\n    requirements: [torch==2.5.1]\n"
                        "    builder: packager.inputs.models.resnet:resnet18\nframework:", 1)
    (art / "request.yaml").write_text(text)
    manifest = load_manifest(art)
    model = current.model.model_copy(update={"conversion": ConversionLock(recipe="pytorch-seeded-to-onnx", requirements=["torch==2.5.1"])})
    (art / "request.lock").write_bytes(current.model_copy(update={"manifest_sha256": manifest.digest(), "model": model}).to_bytes())
    cache.object_path(current.model.sha256).unlink()
    with pytest.raises(CacheMissError) as e:
        lock(art, frozen=True, cache=cache)
    assert str(e.value).startswith("model model.onnx is not in the cache: it is made by the conversion recipe")
    assert f"`request-pack convert {art}`" in str(e.value)


# --- malformed locks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d.update(lock_version=2), "lock_version"),
        (lambda d: d["model"].update(sha256="abc"), "model.sha256"),
        (lambda d: d["platforms"]["linux/amd64"]["debian"]["packages"][0].update(size="big"), "platforms.linux/amd64.debian.packages.0.size"),
        (lambda d: d["platforms"].update({"linux/riscv64": d["platforms"]["linux/amd64"]}), "platforms"),
        (lambda d: d.pop("manifest_sha256"), "manifest_sha256"),
    ],
)
def test_malformed_lock_names_file_and_field(locked, mutate, field: str) -> None:
    art, _, _ = locked
    path = art / "request.lock"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(LockFileError) as e:
        load_lock(path)
    assert str(path) in str(e.value) and field in str(e.value)


def test_lock_that_is_not_json(locked) -> None:
    art, _, _ = locked
    (art / "request.lock").write_bytes(b"\xff\xfe not json")
    with pytest.raises(LockFileError, match="not valid JSON"):
        load_lock(art / "request.lock")


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_fills_an_empty_cache_and_takes_the_model_from_a_file(locked, tmp_path: Path) -> None:
    art, _, current = locked
    empty = Cache.open(tmp_path / "empty")
    given = tmp_path / "downloaded-model.onnx"
    shutil.copyfile(art / "model.onnx", given)
    result = fetch(art, given, cache=empty)
    assert result.frozen
    for obj in locked_objects(current):
        empty.path_of(obj.sha256, verify=True)


def test_fetch_refuses_a_model_file_with_other_bytes(locked, tmp_path: Path) -> None:
    art, _, _ = locked
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(b"not the model")
    with pytest.raises(IntegrityError) as e:
        fetch(art, wrong, cache=Cache.open(tmp_path / "empty"))
    assert str(wrong) in str(e.value)


# --- inputs ------------------------------------------------------------------------------------


def test_dataset_pins_are_sorted_and_relative(locked, tmp_path: Path) -> None:
    art, cache, current = locked
    ds = tmp_path / "ds"
    (ds / "images" / "b").mkdir(parents=True)
    (ds / "labels.tsv").write_text("a.jpg\t1\n")
    for name in ("z.jpg", "a.jpg", "b/c.jpg"):
        (ds / "images" / name).write_bytes(name.encode())
    pins = dataset_pins(ds, load_manifest(art))
    assert [f.path for f in pins.images] == ["images/a.jpg", "images/b/c.jpg", "images/z.jpg"]
    assert pins.labels.sha256 == _sha(b"a.jpg\t1\n")
    (art / "request.lock").write_bytes(current.model_copy(update={"dataset": pins}).to_bytes())
    lock(art, frozen=True, cache=cache, dataset=ds)
    (ds / "images" / "b" / "c.jpg").write_bytes(b"changed")
    with pytest.raises(IntegrityError, match="images/b/c.jpg"):
        lock(art, frozen=True, cache=cache, dataset=ds)


def test_unpinned_conversion_requirement_is_refused_by_name(tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(FIXTURE, art)
    text = (art / "request.yaml").read_text()
    text = text.replace("framework:", "  conversion:\n    recipe: pytorch-state-dict-to-onnx\n    requirements: [torch>=2]\nframework:", 1)
    (art / "request.yaml").write_text(text)
    with pytest.raises(UnpinnedInputError) as e:
        lock(art, cache=Cache.open(tmp_path / "cache"))
    assert "model.conversion.requirements[0]" in str(e.value) and "torch" in str(e.value)


def test_cli_exit_codes(locked) -> None:
    art, cache, _ = locked
    cmd = [sys.executable, "-m", "packager.cli", "lock", str(art), "--frozen", "--cache", str(cache.root)]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "linux/arm64" in ok.stdout
    (art / "request.yaml").write_text((art / "request.yaml").read_text().replace("0.1.0", "0.2.0"))
    stale = subprocess.run(cmd, capture_output=True, text=True)
    assert stale.returncode == 1 and "stale" in stale.stderr
    (art / "request.lock").unlink()
    missing = subprocess.run(cmd, capture_output=True, text=True)
    assert missing.returncode == 2 and "request.lock" in missing.stderr and "Traceback" not in missing.stderr


# --- golden file -------------------------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "lock-golden" / "request.lock"


def _golden_lock() -> Lock:
    """A lock built from constants only: its bytes are the wire format the build reads."""
    def deb(name: str, arch: str) -> DebEntry:
        data = f"{name} {arch}".encode()
        return DebEntry(name=name, version="1:1.0-1", architecture=arch, filename=f"{name}_1.0-1_{arch}.deb", size=len(data),
                        sha256=_sha(data), url=f"http://deb.debian.org/debian/pool/main/x/{name}/{name}_1.0-1_{arch}.deb")

    platforms = {}
    for key, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64")):
        platforms[key] = PlatformLock(
            debian=DebianLock(arch=arch, suite="bookworm",
                              sources=[AptSourceEntry(url="http://deb.debian.org/debian", suite="bookworm", component="main")],
                              packages=[deb("libc6", arch), deb("base-files", arch)]),
            wheels=[WheelEntry(name="demo", version="1.0", filename="demo-1.0-py3-none-any.whl", size=4, sha256=_sha(b"demo"),
                               url="https://files.pythonhosted.org/packages/demo-1.0-py3-none-any.whl", requested=True)])
    model = ModelLock(sha256=_sha(b"onnx"), filename="model.onnx",
                      source=ModelSourceLock(kind="file", path="model.onnx", sha256=_sha(b"onnx"), size=4))
    return Lock(lock_version=1, generator="request-pack", artifact="golden", manifest_sha256="0" * 64, model=model,
                templates={"dockerfiles/image.Dockerfile.j2": _sha(b"template")}, python=PythonTarget(), platforms=platforms)


def test_wire_format_matches_the_golden_file() -> None:
    # Regenerate after a deliberate format change: REQUEST_PACK_UPDATE_GOLDEN=1 pytest tests/unit/test_lock.py
    import os

    data = _golden_lock().to_bytes()
    if os.environ.get("REQUEST_PACK_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(data)
    assert data == GOLDEN.read_bytes()
    assert load_lock(GOLDEN) == _golden_lock()
