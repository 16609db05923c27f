"""The Nix derivation of a real artifact, built in the sandbox: the second builder must agree with the first.

``build-small`` (Debian python3 + numpy, one wheel, the harness, a model) is
locked with a model of fresh random bytes, so its store path is new on every
run and Nix really reads the cache for it. amd64 only: the builder's Python is
the amd64 one, and the base root filesystem comes from the normal cache (made
once per machine by mmdebstrap, ~35 s).

Measured here: engine build ~20 s, nix build ~30 s (witness ~7 s of it), --check ~30 s; the whole module ~2 min
before the base layer and gzip were witnessed too. Now (2026-12-06, 2 cores at load 2-4): nix build 44 s, --check 30 s,
the two failing builds (a lost setuid bit, level-5 gzip) 30 s and 26 s; 154 s in all (about 5 min at load 6).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.errors import NixBuildFailed, NixInputMismatch
from packager.image import build, nix
from packager.platforms import Platform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from build_helpers import locked_copy  # noqa: E402

pytestmark = [pytest.mark.nix, pytest.mark.network, pytest.mark.slow]
AMD64 = (Platform.AMD64,)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nix-build")


@pytest.fixture(scope="module")
def artifact(root) -> Path:
    return locked_copy(root, model=b"request-pack nix integration model " + os.urandom(16))


@pytest.fixture(scope="module")
def expr(artifact, root) -> nix.NixExpression:
    return nix.generate(artifact, out_dir=root / "nix" / "build-small", platforms=AMD64)


@pytest.fixture(scope="module")
def engine(artifact, root) -> build.BuildResult:
    return build.build(artifact, build.BuildOptions(platforms=AMD64, build_root=root / "build"))


def _mirror_cache(expr: nix.NixExpression, cache_root: Path, dest: Path) -> None:
    """A second cache with the same objects (hard links: same bytes, no copies of the big tar)."""
    for pin in expr.pins:
        src = Path(pin.path)
        if not src.is_relative_to(cache_root):
            continue
        target = dest / src.relative_to(cache_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True)
        else:
            os.link(src, target)


# Runs first: the random model is not yet in the store, so Nix must read (and hash) the cache file.
def test_a_changed_byte_of_a_cached_input_is_a_clear_error_naming_it(expr, artifact, root):
    from packager.cache import Cache
    from packager.manifest import load_manifest

    cache = Cache.open()
    bad = root / "bad-cache"
    _mirror_cache(expr, cache.root.resolve(), bad)
    model_sha = load_manifest(artifact).model.sha256
    obj = bad / "cas" / "sha256" / model_sha[:2] / model_sha
    data = bytearray(obj.read_bytes())
    obj.unlink()  # a hard link: write a new file, never through the link into the real cache
    data[-1] ^= 0x01
    obj.write_bytes(bytes(data))
    with pytest.raises(NixInputMismatch) as err:
        nix.realise(expr, cache=bad)
    assert err.value.input == "model model.onnx"
    assert model_sha in str(err.value) and str(obj) in str(err.value)
    print(f"\n{err.value}")


def test_nix_build_gives_the_engine_build_index_digest(expr, engine):
    result = nix.realise(expr)
    comparison = nix.compare_layouts(result.out, engine.layout)
    assert comparison.equal, comparison.detail
    assert result.index_digest == engine.index.digest == engine.record["index_digest"]
    print(f"\nnix and engine: {result.index_digest}")
    # the second writer ran in the sandbox: GNU tar from the locked tar .deb wrote the wheels and file layers again,
    # and each of its tars is a diff_id our writer put in the image config (the builder fails otherwise)
    drv = subprocess.run(["nix-store", "-q", "--deriver", str(result.out)], capture_output=True, text=True, check=True)
    log = subprocess.run(["nix", "log", drv.stdout.strip()], capture_output=True, text=True, check=True).stdout
    layers = {img["role"]: img["diff_id"] for img in engine.record["platforms"]["linux/amd64"]["layers"]}
    for role in ("wheels", "harness", "model"):  # the wheels installed by the builder's shell, not our layers.py
        assert f"GNU tar agrees: {role} layer" in log and layers[role] in log, log[-2000:]
    # the base layer too, by GNU tar under fakeroot; and pigz gzipped every layer tar to the blob in our manifest
    assert f"GNU tar agrees: base layer" in log and layers["base"] in log, log[-2000:]
    blobs = {img["role"]: img["digest"] for img in engine.record["platforms"]["linux/amd64"]["layers"]}
    for role in ("base", "wheels", "harness", "model"):
        assert f"pigz agrees: {role} layer" in log and blobs[role] in log, log[-2000:]
    assert "every layer witnessed: 4 distinct layer blobs" in log, log[-2000:]
    # and Nix's builtins.toJSON wrote the configs, manifests and index again, to the same index digest
    assert f"Nix's JSON agrees: index {engine.index.digest}" in log, log[-2000:]


def _with_file(expr: nix.NixExpression, root: Path, name: str, attr: str, text: str) -> nix.NixExpression:
    """The expression with one pinned repository file (``ociPy = inN;``, ``args = [ "-e" inN ];``) replaced by ``text``."""
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    (work / "file").write_text(text)
    source = expr.default_nix.read_text()
    pattern = {"ociPy": r'(?m)^(  ociPy = )\w+;', "layersPy": r'(?m)^(  layersPy = )\w+;',
               "builder": r'(?m)^(  args = \[ "-e" )\w+( \];)'}[attr]
    changed, n = re.subn(pattern, lambda m: m.group(1) + f'(builtins.path {{ name = "{name}"; path = {work / "file"}; }})'
                         + (m.group(2) if m.lastindex == 2 else ";"), source)
    assert n == 1, attr
    (work / "default.nix").write_text(changed)
    return dataclasses.replace(expr, directory=work, default_nix=work / "default.nix")


def _writer(rel: str) -> str:
    return (nix.REPO_ROOT / rel).read_text()


# Each of the second writers fails the build, naming the layer, when our writer's bytes are not its own.
def test_a_writer_that_loses_a_setuid_bit_fails_at_the_base_layer(expr, root):
    layers_py = _writer("packager/image/writer/layers.py")
    assert "        mode = m.mode\n" in layers_py
    bad = layers_py.replace("        mode = m.mode\n", "        mode = m.mode & ~0o4000 if path == 'usr/bin/su' else m.mode\n")
    with pytest.raises(NixBuildFailed) as err:
        nix.realise(_with_file(expr, root, "setuid", "layersPy", bad))
    assert "GNU tar's base layer" in str(err.value) and "no diff_id of the images our writer made" in str(err.value)
    print(f"\n{err.value}")


def test_other_gzip_bytes_of_the_same_tar_fail_at_the_first_layer(expr, root):
    oci_py = _writer("packager/image/writer/oci.py")
    assert "\nGZIP_LEVEL = 6\n" in oci_py
    with pytest.raises(NixBuildFailed) as err:  # the same tars, level 5: GNU tar agrees, pigz -6 must not
        nix.realise(_with_file(expr, root, "gzip5", "ociPy", oci_py.replace("\nGZIP_LEVEL = 6\n", "\nGZIP_LEVEL = 5\n")))
    assert "pigz's gzip of the base layer" in str(err.value) and "no layer digest of our manifests" in str(err.value)
    print(f"\n{err.value}")



def test_nix_build_check_rebuilds_bit_for_bit(expr, engine):
    result = nix.realise(expr, check=True)
    assert result.checked and result.index_digest == engine.index.digest


def test_flake_exposes_the_same_package(expr, engine, root):
    # A flake of its own (flake.nix + nix/<name>): the repository's nix/ holds no generated test expression.
    flake = root / "flake"
    (flake / "nix").mkdir(parents=True)
    shutil.copyfile(nix.REPO_ROOT / "flake.nix", flake / "flake.nix")
    shutil.copytree(expr.directory, flake / "nix" / expr.name)
    result = nix.realise(expr, flake=flake)
    assert result.index_digest == engine.index.digest
    shown = subprocess.run(["nix", "flake", "show", "--json", f"path:{flake}"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "build-small" in json.loads(shown.stdout)["packages"]["x86_64-linux"]


def test_cli_generates_builds_and_compares(artifact, root, engine):
    out = subprocess.run([sys.executable, "-m", "packager.cli", "nix", str(artifact), "--platform", "linux/amd64",
                          "--out", str(root / "nix-cli" / "build-small"), "--build",
                          "--compare", str(engine.layout)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "same as the engine build" in out.stdout and engine.index.digest in out.stdout.replace("\n", "")


@pytest.mark.emulation
def test_all_three_platforms_agree_without_emulating_anything(artifact, root):
    """arm64 and arm/v7 layers are written by the amd64 builder from their pinned base tars and wheels.

    The base tars are the ones `request-pack build` made (under QEMU, cached by
    the lock's .debs, e.g. by tests/integration/test_build.py); Nix itself runs
    nothing foreign.
    """
    everything = (Platform.AMD64, Platform.ARM64, Platform.ARMV7)
    engine3 = build.build(artifact, build.BuildOptions(platforms=everything, build_root=root / "build3"))
    expr3 = nix.generate(artifact, out_dir=root / "nix3" / "build-small", platforms=everything)
    result = nix.realise(expr3)
    comparison = nix.compare_layouts(result.out, engine3.layout)
    assert comparison.equal, comparison.detail
    print(f"\nthree platforms, nix and engine: {result.index_digest}")
