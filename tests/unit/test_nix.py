"""packager.image.nix without building an image: expressions from a synthetic offline lock, checked by the real nix.

Tests marked ``nix`` run the nix binaries (parse, evaluate, instantiate, and
for the non-determinism case a tiny busybox build); none reaches a network or
builds the image. The others are pure Python.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from packager.cache import Cache
from packager.errors import NixInputMismatch, NixNotDeterministic
from packager.image import nix, plan
from packager.image.rootfs import recipe_key
from packager.image.writer import oci
from packager.inputs.lockfile import (
    AptSourceEntry,
    DebEntry,
    DebianLock,
    Lock,
    ModelLock,
    ModelSourceLock,
    PlatformLock,
    PythonTarget,
    WheelEntry,
    template_hashes,
)
from packager.manifest import load_manifest
from packager.platforms import Platform, base_system

DATA = Path(__file__).resolve().parents[1] / "data" / "build-small"
EPOCH = 1_700_000_000


# --- a locked artifact with a cache, made offline -------------------------------------------


def _deb(name: str) -> bytes:
    """An ar archive whose first member header carries EPOCH, which is all ``deb_epoch`` reads."""
    header = (b"debian-binary".ljust(16) + str(EPOCH).encode().ljust(12) + b"0".ljust(6) + b"0".ljust(6)
              + b"100644".ljust(8) + b"4".ljust(10) + b"`\n")
    return b"!<arch>\n" + header + b"2.0\n" + name.encode()


def _wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("packaging-24.2.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return buf.getvalue()


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, Cache]:
    art = tmp_path / "artifacts" / "build-small"
    shutil.copytree(DATA, art, ignore=shutil.ignore_patterns("request.lock"))
    model = b"request-pack nix unit test model " + os.urandom(16)  # a store path no earlier run has made
    (art / "model.onnx").write_bytes(model)
    model_sha = hashlib.sha256(model).hexdigest()
    text = (art / "request.yaml").read_text()
    (art / "request.yaml").write_text(re.sub(r"(?m)^  sha256: [0-9a-f]{64}$", f"  sha256: {model_sha}", text, count=1))
    manifest = load_manifest(art)
    cache = Cache.open(tmp_path / "cache")
    debs = []
    for name in nix.builder_debs(base_system("bookworm")) + nix.GNU_TAR_DEBS + ("python3", "libssl3"):
        data = _deb(name)
        version = "3.0-1~deb12u1" if name == "libssl3" else "1.0"  # '~' is not allowed in store names
        debs.append(DebEntry(name=name, version=version, architecture="amd64", filename=f"{name}_{version}_amd64.deb",
                             size=len(data), sha256=cache.put_bytes(data), url="http://deb.invalid/"))
    wheel = _wheel()
    wheels = [WheelEntry(name="packaging", version="24.2", filename="packaging-24.2-py3-none-any.whl", size=len(wheel),
                         sha256=cache.put_bytes(wheel), url="https://pypi.invalid/", requested=True)]
    cache.put_bytes(model)
    tools = []
    for name in nix.NIX_TOOL_DEBS:
        data = _deb(name)
        tools.append(DebEntry(name=name, version="1.0", architecture="amd64", filename=f"{name}_1.0_amd64.deb",
                              size=len(data), sha256=cache.put_bytes(data), url="http://deb.invalid/"))
    lock = Lock(lock_version=1, generator="request-pack", artifact=manifest.name, manifest_sha256=manifest.digest(),
                model=ModelLock(sha256=model_sha, filename="model.onnx",
                                source=ModelSourceLock(kind="file", sha256=model_sha, size=len(model), path="model.onnx")),
                templates=template_hashes(), python=PythonTarget(),
                platforms={"linux/amd64": PlatformLock(
                    debian=DebianLock(arch="amd64", suite="bookworm",
                                      sources=[AptSourceEntry(url="http://deb.invalid/debian", suite="bookworm", component="main")],
                                      packages=debs),
                    wheels=wheels)},
                builder=DebianLock(arch="amd64", suite="bookworm", sources=[], packages=tools))
    (art / "request.lock").write_bytes(lock.to_bytes())
    # The base tar as rootfs.build_rootfs caches it, so no mmdebstrap runs.
    key = recipe_key(Platform.AMD64, plan.debs_of(lock, Platform.AMD64), EPOCH)
    tar_path = cache.subdir("rootfs") / f"{key}.tar"
    with tarfile.open(tar_path, "w") as tar:
        info = tarfile.TarInfo("etc/debian_version")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"12\n"))
    meta = {"sha256": hashlib.sha256(tar_path.read_bytes()).hexdigest(), "packages": len(debs), "seconds": 0.0}
    (tar_path.with_suffix(".json")).write_text(json.dumps(meta))
    return art, cache


def _generate(art: Path, cache: Cache, tmp_path: Path) -> nix.NixExpression:
    return nix.generate(art, out_dir=tmp_path / "nix" / "build-small", platforms=(Platform.AMD64,), cache_root=cache.root)


def _nix(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True)


# --- generation, evaluated by nix ----------------------------------------------------------------


@pytest.mark.nix
def test_generated_expressions_parse(synthetic, tmp_path):
    expr = _generate(*synthetic, tmp_path)
    for path in (expr.default_nix, expr.dockertools_nix):
        proc = _nix("nix-instantiate", "--parse", str(path))
        assert proc.returncode == 0, proc.stderr
    assert expr.default_nix.read_text().count("builtins.path") >= 4


def _drv(expr: nix.NixExpression) -> dict:
    proc = _nix("nix-instantiate", str(expr.default_nix))
    assert proc.returncode == 0, proc.stderr
    drv_path = proc.stdout.strip()
    shown = _nix("nix", "show-derivation", drv_path)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)[drv_path]


def _engine_plan(art: Path, cache: Cache) -> dict:
    from packager.image.rootfs import build_rootfs

    inputs = plan.load_inputs(art, (Platform.AMD64,), cache.root)
    manifest, lock, lock_path = inputs.manifest, inputs.lock, inputs.lock_path
    debs = plan.debs_of(lock, Platform.AMD64)
    rootfs = build_rootfs(Platform.AMD64, debs, cache, EPOCH)
    lock_sha = hashlib.sha256(lock_path.read_bytes()).hexdigest()
    return plan.platform_plan(lock, manifest, Platform.AMD64, cache, EPOCH, rootfs, lock_sha)


def _same_bytes(store_path: str, host_path: str) -> bool:
    assert store_path.startswith("/nix/store/"), store_path
    return hashlib.sha256(Path(store_path).read_bytes()).hexdigest() == hashlib.sha256(Path(host_path).read_bytes()).hexdigest()


@pytest.mark.nix
def test_derivation_executes_the_engine_plan_with_pinned_store_paths(synthetic, tmp_path):
    art, cache = synthetic
    expr = _generate(art, cache, tmp_path)
    drv = _drv(expr)
    assert drv["builder"].endswith("-busybox-static/bin/sh")
    assert drv["system"] == "x86_64-linux"
    # Every pinned file is a fixed-output source of the derivation, and nothing else comes in
    # (tree.py serves only the nixpkgs form).
    names = {Path(p).name.split("-", 1)[1] for p in drv["inputSrcs"]}
    assert {p.store_name for p in expr.pins} - {"request-pack-nix-tree.py"} == names
    plan = json.loads(drv["env"]["plan"])
    assert plan["plan_version"] == 1 and len(plan["platforms"]) == 1
    ours, engine = plan["platforms"][0], _engine_plan(art, cache)
    assert [layer["role"] for layer in ours["layers"]] == ["base", "wheels", "harness", "model"]
    for key in ("platform", "epoch", "config", "history"):
        assert ours[key] == engine[key], key
    # Same layer specs, except that each host path became a store path of the same bytes.
    for a, b in zip(ours["layers"], engine["layers"]):
        assert {k: v for k, v in a.items() if k not in ("tar", "wheels", "files")} == \
               {k: v for k, v in b.items() if k not in ("tar", "wheels", "files")}
        if a["kind"] == "rootfs":
            assert _same_bytes(a["tar"], b["tar"])
        for (sa, na), (sb, nb) in zip(a.get("wheels", []), b.get("wheels", [])):
            assert na == nb and _same_bytes(sa, sb)
        assert len(a.get("files", [])) == len(b.get("files", []))
        for (sa, *rest_a), (sb, *rest_b) in zip(a.get("files", []), b.get("files", [])):
            assert rest_a == rest_b and _same_bytes(sa, sb)


@pytest.mark.nix
def test_dockertools_form_evaluates_against_a_stand_in_pkgs(synthetic, tmp_path):
    art, cache = synthetic
    expr = _generate(art, cache, tmp_path)
    stub = tmp_path / "pkgs.nix"
    # Records what the expression asks nixpkgs for; the real dockerTools is not reachable here.
    stub.write_text("""{
      python3 = "python3-from-stand-in";
      runCommand = name: env: script: { inherit name script; spec = builtins.fromJSON (builtins.unsafeDiscardStringContext env.spec); inputs = env.nativeBuildInputs; };
      dockerTools.buildLayeredImage = args: args // { kind = "layered-image"; };
    }""")
    proc = _nix("nix-instantiate", "--eval", "--strict", "--json", "--expr",
                f"import {expr.dockertools_nix} {{ pkgs = import {stub}; }}")
    assert proc.returncode == 0, proc.stderr
    images = json.loads(proc.stdout)
    assert list(images) == ["linux_amd64"]
    img = images["linux_amd64"]
    assert img["kind"] == "layered-image" and img["name"] == "request-pack/build-small" and img["tag"] == "0.1.0"
    assert img["architecture"] == "amd64"
    engine = _engine_plan(art, cache)
    assert img["config"] == engine["config"] and img["created"] == oci.rfc3339(EPOCH)
    assert [c["spec"]["role"] for c in img["contents"]] == ["base", "wheels", "harness", "model"]
    for c in img["contents"]:
        assert c["inputs"] == ["python3-from-stand-in"]
        assert re.search(r"python3 -S -B /nix/store/[a-z0-9]{32}-request-pack-nix-tree\.py ", c["script"]), c["script"]
        assert c["spec"]["epoch"] == EPOCH


@pytest.mark.nix
def test_a_changed_byte_in_a_cached_input_is_named(synthetic, tmp_path):
    art, cache = synthetic
    expr = _generate(art, cache, tmp_path)
    model_sha = load_manifest(art).model.sha256
    obj = cache.object_path(model_sha)
    os.chmod(obj, 0o644)
    data = bytearray(obj.read_bytes())
    data[5] ^= 0x01
    obj.write_bytes(bytes(data))
    with pytest.raises(NixInputMismatch) as err:
        nix.realise(expr)
    assert err.value.input == "model model.onnx"
    text = str(err.value)
    assert model_sha in text and hashlib.sha256(bytes(data)).hexdigest() in text and str(obj) in text
    assert "request-pack fetch" in text


@pytest.mark.nix
def test_nar_hash_is_the_one_nix_computes(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "plain").write_bytes(b"x" * 13)
    (tmp_path / "d" / "sub" / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(tmp_path / "d" / "sub" / "tool", 0o755)
    (tmp_path / "d" / "link").symlink_to("sub/tool")
    (tmp_path / "d" / "empty").write_bytes(b"")
    for path in (tmp_path / "d", tmp_path / "d" / "plain", tmp_path / "d" / "sub" / "tool"):
        proc = _nix("nix-hash", "--type", "sha256", str(path))
        assert proc.returncode == 0, proc.stderr
        assert nix.nar_sha256(path) == proc.stdout.strip(), path


@pytest.mark.nix
def test_nix_literals_round_trip_through_nix():
    value = {"a b": ["x", 1, True, None, {"${not": "an antiquotation ${x}"}], "q": 'say "hi"\\\n\t', "ü": "ß€"}
    proc = _nix("nix-instantiate", "--eval", "--strict", "--json", "--expr", nix.to_nix(value))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == value


@pytest.mark.nix
def test_busybox_is_static_and_python_is_not():
    assert nix.is_static_elf(nix.BUSYBOX)
    assert not nix.is_static_elf(Path(os.path.realpath(sys.executable)))


@pytest.mark.nix
def test_a_nondeterministic_build_is_reported_with_the_differing_file(tmp_path):
    staged, nar = nix.stage_busybox(tmp_path / "cache")
    expr_path = tmp_path / "random.nix"
    # A layout whose one layer holds fresh random bytes on every build: --check must catch it.
    expr_path.write_text(f"""
let busybox = builtins.path {{ name = "busybox-static"; path = "{staged}"; recursive = true; sha256 = "{nar}"; }};
in derivation {{
  name = "request-pack-test-random-layout";
  system = "x86_64-linux";
  builder = "${{busybox}}/bin/sh";
  args = [ "-ec" ''
    bb=${{busybox}}/bin/busybox
    put() {{ h=$($bb sha256sum "$1" | $bb cut -c1-64); s=$($bb stat -c %s "$1"); $bb cp "$1" "$out/blobs/sha256/$h"; }}
    $bb mkdir -p "$out/blobs/sha256" w && cd w
    $bb head -c 32 /dev/urandom > random
    $bb tar -cf layer.tar random && $bb gzip -n layer.tar
    put layer.tar.gz; l=$h; ls=$s
    echo -n '{{"history":[{{"created_by":"test: random layer"}}],"rootfs":{{"diff_ids":[]}}}}' > config
    put config; c=$h; cs=$s
    echo -n "{{\\"schemaVersion\\":2,\\"config\\":{{\\"digest\\":\\"sha256:$c\\",\\"size\\":$cs}},\\"layers\\":[{{\\"digest\\":\\"sha256:$l\\",\\"size\\":$ls}}]}}" > manifest
    put manifest; m=$h; ms=$s
    echo -n "{{\\"schemaVersion\\":2,\\"manifests\\":[{{\\"digest\\":\\"sha256:$m\\",\\"size\\":$ms,\\"platform\\":{{\\"os\\":\\"linux\\",\\"architecture\\":\\"amd64\\"}}}}]}}" > index
    put index
    echo -n "{{\\"schemaVersion\\":2,\\"manifests\\":[{{\\"digest\\":\\"sha256:$h\\",\\"size\\":$s}}]}}" > "$out/index.json"
  '' ];
}}
""")
    expr = nix.NixExpression("random", tmp_path, expr_path, expr_path, (), ())
    first = nix.realise(expr)
    assert first.index_digest.startswith("sha256:")
    with pytest.raises(NixNotDeterministic) as err:
        nix.realise(expr, check=True)
    assert "random: content differs" in str(err.value), str(err.value)


# --- pure Python -----------------------------------------------------------------------------------


def test_to_nix_refuses_floats_which_nix_would_round():
    with pytest.raises(TypeError):
        nix.to_nix({"mean": 0.4980392156862745})


def test_store_names_are_valid():
    assert nix.store_name("libssl3_3.0.22-1~deb12u2_amd64.deb") == "libssl3_3.0.22-1_deb12u2_amd64.deb"
    assert nix.store_name(".hidden:x") == "hidden_x"
    assert re.fullmatch(r"[A-Za-z0-9+\-._?=]+", nix.store_name("a b/c~d"))


def _layout(root: Path, files: dict[str, bytes], archs: tuple[str, ...] = ("amd64",)) -> None:
    blobs = root / "blobs" / "sha256"
    mans = []
    for arch in archs:
        entries = [oci.Entry(p, "file", size=len(d), open=lambda d=d: io.BytesIO(d)) for p, d in files.items()]
        layer = oci.write_layer(entries, blobs, EPOCH)
        plat = oci.platform_json("linux", arch, None)
        cfg = oci.write_blob(blobs, oci.image_config(plat, [layer.diff_id], {}, [{"created_by": "t: model layer"}], EPOCH),
                             oci.MT_CONFIG)
        mans.append(oci.write_blob(blobs, oci.image_manifest(cfg, [layer.descriptor]), oci.MT_MANIFEST, platform=plat))
    oci.write_layout(root, oci.write_blob(blobs, oci.image_index(mans), oci.MT_INDEX), "latest")


def test_compare_layouts_names_the_first_differing_layer_and_file(tmp_path):
    _layout(tmp_path / "a", {"opt/a.txt": b"same", "opt/b.txt": b"one"})
    _layout(tmp_path / "b", {"opt/a.txt": b"same", "opt/b.txt": b"two"})
    _layout(tmp_path / "c", {"opt/a.txt": b"same", "opt/b.txt": b"one"})
    same = nix.compare_layouts(tmp_path / "a", tmp_path / "c")
    assert same.equal and same.nix_index == same.engine_index
    diff = nix.compare_layouts(tmp_path / "a", tmp_path / "b")
    assert not diff.equal
    assert "model layer" in diff.detail and "opt/b.txt: content differs" in diff.detail


def test_a_one_platform_nix_build_is_compared_with_that_platform_of_the_engine_index(tmp_path):
    # `nix --platform linux/amd64 --check` beside a build of every platform: like with like, by manifest digest
    _layout(tmp_path / "engine", {"opt/a.txt": b"one"}, archs=("amd64", "arm64"))
    _layout(tmp_path / "nix-amd64", {"opt/a.txt": b"one"})
    _layout(tmp_path / "nix-other", {"opt/a.txt": b"two"})
    _layout(tmp_path / "nix-riscv", {"opt/a.txt": b"one"}, archs=("riscv64",))
    same = nix.compare_layouts(tmp_path / "nix-amd64", tmp_path / "engine")
    assert same.equal and same.nix_index != same.engine_index
    amd64 = oci.read_json_blob(tmp_path / "engine", same.engine_index)["manifests"][0]["digest"]
    assert f"linux/amd64 manifest {amd64}" in same.detail and "holds 2 platforms, this one 1" in same.detail
    other = nix.compare_layouts(tmp_path / "nix-other", tmp_path / "engine")
    assert not other.equal and "opt/a.txt: content differs" in other.detail and '"amd64"' in other.detail
    assert not nix.compare_layouts(tmp_path / "nix-riscv", tmp_path / "engine").equal  # not one of the engine's
    assert not nix.compare_layouts(tmp_path / "engine", tmp_path / "nix-amd64").equal  # nix built more than the engine


# --- flake and command line --------------------------------------------------------------------------


@pytest.mark.nix
def test_flake_lists_generated_artifacts_and_pins_nixpkgs_like_nixpkgs_nix(synthetic, tmp_path):
    art, cache = synthetic
    flake = tmp_path / "flake"
    (flake / "nix").mkdir(parents=True)
    shutil.copyfile(nix.REPO_ROOT / "flake.nix", flake / "flake.nix")
    shutil.copyfile(nix.NIX_DIR / "nixpkgs.nix", flake / "nix" / "nixpkgs.nix")
    nix.generate(art, out_dir=flake / "nix" / "build-small", platforms=(Platform.AMD64,), cache_root=cache.root)
    # Evaluating the package must not fetch nixpkgs (no network here; substituters are off).
    drv = _nix("nix", "eval", "--raw", f"path:{flake}#packages.x86_64-linux.build-small.drvPath")
    assert drv.returncode == 0, drv.stderr
    assert drv.stdout.startswith("/nix/store/") and drv.stdout.endswith("-build-small-0.1.0-oci.drv")
    names = _nix("nix", "eval", "--json", f"path:{flake}#nixpkgsImages.x86_64-linux", "--apply", "builtins.attrNames")
    assert names.returncode == 0, names.stderr
    assert json.loads(names.stdout) == ["build-small"]
    pin = _nix("nix", "eval", "--json", f"path:{flake}#lib.nixpkgsPin")
    assert pin.returncode == 0, pin.stderr
    text = (nix.NIX_DIR / "nixpkgs.nix").read_text()
    assert json.loads(pin.stdout) == {"rev": re.search(r'rev \? "([0-9a-f]{40})"', text).group(1),
                                      "narHash": re.search(r'narHash \? "(sha256-[A-Za-z0-9+/=]+)"', text).group(1)}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", "nix", *args], capture_output=True, text=True)


def test_cli_missing_lock_is_bad_input(synthetic, tmp_path):
    art, cache = synthetic
    (art / "request.lock").unlink()
    out = _cli(str(art), "--cache", str(cache.root), "--out", str(tmp_path / "o"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "request.lock" in out.stdout + out.stderr
    assert not (tmp_path / "o" / "default.nix").exists()


def test_cli_corrupt_cache_object_is_named_before_nix_runs(synthetic, tmp_path):
    art, cache = synthetic
    wheel = next(p for p in (cache.root / "cas" / "sha256").rglob("*") if p.is_file() and not p.name.endswith(".json")
                 and cache.describe(p.name) == {} and p.read_bytes().startswith(b"PK"))
    os.chmod(wheel, 0o644)
    wheel.write_bytes(wheel.read_bytes() + b"!")
    out = _cli(str(art), "--platform", "linux/amd64", "--cache", str(cache.root), "--out", str(tmp_path / "o"), "--build")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "packaging-24.2-py3-none-any.whl" in (out.stdout + out.stderr).replace("\n", "")
    assert not (tmp_path / "o" / "default.nix").exists()


# --- nix/witness.py: the base tar against the .debs (pure Python) -----------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _real_deb(files: dict[str, bytes]) -> bytes:
    import lzma

    def member(name: str, data: bytes) -> bytes:
        head = (name.encode().ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                + str(len(data)).encode().ljust(10) + b"`\n")
        return head + data + (b"\n" if len(data) % 2 else b"")

    return (b"!<arch>\n" + member("debian-binary", b"2.0\n") + member("control.tar.xz", lzma.compress(_tar({})))
            + member("data.tar.xz", lzma.compress(_tar(files))))


def _witness():
    sys.path.insert(0, str(nix.NIX_DIR))
    try:
        import witness
    finally:
        sys.path.remove(str(nix.NIX_DIR))
    return witness


def test_witness_accepts_a_base_made_of_the_debs_and_names_a_changed_file(tmp_path):
    from packager.image.rootfs import DPKG_OPTIONS

    w = _witness()
    deb = tmp_path / "0000-tool_1.0_amd64.deb"
    deb.write_bytes(_real_deb({"./bin/tool": b"tool v1", "./usr/share/doc/tool/changelog.gz": b"log",
                               "./usr/share/doc/tool/copyright": b"(c)", "./etc/tool.conf": b"a=1"}))
    good = {"usr/bin/tool": b"tool v1", "usr/share/doc/tool/copyright": b"(c)", "etc/tool.conf": b"a=2",
            "etc/passwd": b"root:x:0:0::/root:/bin/sh"}
    spec = {"platform": "linux/amd64", "debs": [str(deb)], "dpkg_options": list(DPKG_OPTIONS)}
    (tmp_path / "good.tar").write_bytes(_tar(good))
    line = w.witness({**spec, "tar": str(tmp_path / "good.tar")})
    assert "2 files with their .deb's bytes, 1 dropped by dpkg path-excludes, 1 conffiles" in line
    assert "1 files not from any .deb" in line
    (tmp_path / "bad.tar").write_bytes(_tar({**good, "usr/bin/tool": b"tool v2"}))
    with pytest.raises(w.WitnessFailed, match="usr/bin/tool differs from its bytes in tool_1.0_amd64.deb"):
        w.witness({**spec, "tar": str(tmp_path / "bad.tar")})
    (tmp_path / "short.tar").write_bytes(_tar({k: v for k, v in good.items() if "copyright" not in k}))
    with pytest.raises(w.WitnessFailed, match="copyright of tool_1.0_amd64.deb is missing"):
        w.witness({**spec, "tar": str(tmp_path / "short.tar")})


def test_builder_tools_are_pinned_from_the_lock_and_carried_like_every_locked_deb(synthetic, tmp_path):
    from packager.inputs.lockfile import load_lock, locked_objects

    art, cache = synthetic
    lock = load_lock(art / "request.lock")
    names = {o.name for o in locked_objects(lock)}  # what fetch, archive and fetch --from carry
    assert {f"nix builder deb {n}_1.0_amd64.deb" for n in nix.NIX_TOOL_DEBS} <= names
    expr = _generate(art, cache, tmp_path)
    text = expr.default_nix.read_text()
    for n in nix.NIX_TOOL_DEBS:
        pin = next(p for p in expr.pins if p.label == f"nix builder deb {n}_1.0_amd64.deb")
        assert pin.sha256 in text
    assert "toolDebs = [ " in text
    # a lock made before the builder section existed: refused before any file is written, naming the field
    (art / "request.lock").write_bytes(lock.model_copy(update={"builder": None}).to_bytes())
    out = _cli(str(art), "--platform", "linux/amd64", "--cache", str(cache.root), "--out", str(tmp_path / "o"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "builder" in out.stdout + out.stderr and "re-lock" in out.stdout + out.stderr
    assert not (tmp_path / "o" / "default.nix").exists()
