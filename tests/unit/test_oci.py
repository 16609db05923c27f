"""The deterministic layer and OCI layout writer: same entries, same bytes; any change, a named difference."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from contextlib import ExitStack
from pathlib import Path

import pytest

from packager.errors import EmulationMissing
from packager.image.plan import deb_epoch, harness_files
from packager.image.rootfs import check_emulation
from packager.image.writer import layers, oci
from packager.platforms import Platform

EPOCH = 1_700_000_000


def _file(path: str, data: bytes, *, mode: int = 0o644, mtime: int = EPOCH, uid: int = 0) -> oci.Entry:
    return oci.Entry(path, "file", mode=mode, mtime=mtime, uid=uid, gid=uid, size=len(data), open=lambda: io.BytesIO(data))


def _entries() -> list[oci.Entry]:
    return [
        oci.Entry("usr", "dir", mode=0o755, mtime=EPOCH),
        oci.Entry("usr/bin", "dir", mode=0o755, mtime=EPOCH),
        _file("usr/bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755),
        oci.Entry("usr/bin/alias", "symlink", mode=0o777, linkname="tool", mtime=EPOCH),
        _file("etc/config", b"key=value\n"),
        oci.Entry("etc", "dir", mode=0o755, mtime=EPOCH),
    ]


def _members(blob: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(blob, "r:gz") as tar:
        return tar.getmembers()


def test_same_entries_in_any_order_give_the_same_digest(tmp_path):
    a = oci.write_layer(_entries(), tmp_path / "a", EPOCH)
    b = oci.write_layer(list(reversed(_entries())), tmp_path / "b", EPOCH)
    assert a.descriptor.digest == b.descriptor.digest
    assert a.diff_id == b.diff_id
    assert (tmp_path / "a" / a.descriptor.hex).read_bytes() == (tmp_path / "b" / b.descriptor.hex).read_bytes()


def test_digest_and_diff_id_are_the_hashes_of_the_blob(tmp_path):
    layer = oci.write_layer(_entries(), tmp_path, EPOCH)
    blob = (tmp_path / layer.descriptor.hex).read_bytes()
    assert layer.descriptor.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.descriptor.size == len(blob)
    assert layer.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()


def test_gzip_header_has_no_time_and_no_name(tmp_path):
    layer = oci.write_layer(_entries(), tmp_path, EPOCH)
    head = (tmp_path / layer.descriptor.hex).read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] & 0x08 == 0, "FNAME flag set"
    assert head[4:8] == b"\x00\x00\x00\x00", "gzip mtime not zero"


def test_tar_is_sorted_relative_numeric_and_clamped(tmp_path):
    entries = _entries() + [_file("usr/bin/new", b"x", mtime=EPOCH + 999, uid=1000)]
    layer = oci.write_layer(entries, tmp_path, EPOCH)
    members = _members(tmp_path / layer.descriptor.hex)
    names = [m.name for m in members]
    assert names == ["etc", "etc/config", "usr", "usr/bin", "usr/bin/alias", "usr/bin/new", "usr/bin/tool"]
    assert all(m.mtime <= EPOCH for m in members)
    assert all(m.uname == "" and m.gname == "" for m in members)
    new = next(m for m in members if m.name == "usr/bin/new")
    assert (new.uid, new.gid) == (1000, 1000)


def test_content_change_changes_digest_and_is_named(tmp_path):
    a = oci.write_layer(_entries(), tmp_path / "a", EPOCH)
    changed = [e if e.path != "etc/config" else _file("etc/config", b"key=other\n") for e in _entries()]
    b = oci.write_layer(changed, tmp_path / "b", EPOCH)
    assert a.descriptor.digest != b.descriptor.digest
    diff = oci.first_difference(tmp_path / "a" / a.descriptor.hex, tmp_path / "b" / b.descriptor.hex)
    assert diff is not None and diff.path == "etc/config" and diff.what.startswith("content")


@pytest.mark.parametrize("change, what", [
    (lambda e: oci.Entry(e.path, e.kind, mode=0o600, mtime=e.mtime, size=e.size, open=e.open), "mode"),
    (lambda e: oci.Entry(e.path, e.kind, mode=e.mode, mtime=e.mtime - 10, size=e.size, open=e.open), "mtime"),
    (lambda e: oci.Entry(e.path, e.kind, mode=e.mode, uid=5, gid=5, mtime=e.mtime, size=e.size, open=e.open), "owner"),
])
def test_first_difference_says_what_differs(tmp_path, change, what):
    a = oci.write_layer(_entries(), tmp_path / "a", EPOCH)
    b = oci.write_layer([change(e) if e.path == "usr/bin/tool" else e for e in _entries()], tmp_path / "b", EPOCH)
    diff = oci.first_difference(tmp_path / "a" / a.descriptor.hex, tmp_path / "b" / b.descriptor.hex)
    assert diff is not None and diff.path == "usr/bin/tool" and diff.what.startswith(what)


def test_identical_layers_have_no_difference(tmp_path):
    a = oci.write_layer(_entries(), tmp_path / "a", EPOCH)
    assert oci.first_difference(tmp_path / "a" / a.descriptor.hex, tmp_path / "a" / a.descriptor.hex) is None


def test_hard_links_point_at_the_first_path_in_order(tmp_path):
    entries = [
        _file("z/target", b"shared"),
        oci.Entry("a/link", "hardlink", linkname="z/target", mtime=EPOCH),
        oci.Entry("a", "dir", mode=0o755), oci.Entry("z", "dir", mode=0o755),
    ]
    layer = oci.write_layer(entries, tmp_path, EPOCH)
    members = {m.name: m for m in _members(tmp_path / layer.descriptor.hex)}
    assert members["a/link"].isfile() and members["a/link"].size == 6
    assert members["z/target"].islnk() and members["z/target"].linkname == "a/link"


def test_paths_that_climb_out_are_refused(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        oci.write_layer([_file("../etc/passwd", b"x")], tmp_path, EPOCH)


def test_layout_documents_are_canonical_and_linked(tmp_path):
    blobs = tmp_path / "blobs" / "sha256"
    layer = oci.write_layer(_entries(), blobs, EPOCH)
    plat = oci.platform_json("linux", "arm", "v7")
    cfg = oci.write_blob(blobs, oci.image_config(plat, [layer.diff_id], {"User": "1000:1000"}, [{"created_by": "t"}], EPOCH),
                         oci.MT_CONFIG)
    man = oci.write_blob(blobs, oci.image_manifest(cfg, [layer.descriptor]), oci.MT_MANIFEST, platform=plat)
    index = oci.write_blob(blobs, oci.image_index([man]), oci.MT_INDEX)
    oci.write_layout(tmp_path, index, "latest")
    top = json.loads((tmp_path / "index.json").read_bytes())
    assert top["manifests"][0]["digest"] == index.digest
    assert top["manifests"][0]["annotations"] == {oci.REF_NAME: "latest"}
    idx = oci.read_json_blob(tmp_path, index.digest)
    assert idx["manifests"][0]["platform"] == {"os": "linux", "architecture": "arm", "variant": "v7"}
    config = oci.read_json_blob(tmp_path, cfg.digest)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["rootfs"]["diff_ids"] == [layer.diff_id]
    raw = oci.blob_path(tmp_path, cfg.digest).read_bytes()
    assert raw == oci.canonical_json(json.loads(raw)), "config is not canonical JSON"
    assert json.loads((tmp_path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}


# --- layer sources ------------------------------------------------------------------------------


def _wheel(tmp_path: Path) -> Path:
    path = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo_pkg/__init__.py", "def main():\n    return 0\n")
        zf.writestr("demo_pkg-1.0.data/scripts/demo-script", "#!python\nprint('hi')\n")
        zf.writestr("demo_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
        zf.writestr("demo_pkg-1.0.dist-info/METADATA", "Name: demo-pkg\nVersion: 1.0\n")
        zf.writestr("demo_pkg-1.0.dist-info/entry_points.txt", "[console_scripts]\ndemo = demo_pkg:main\n")
        zf.writestr("demo_pkg-1.0.dist-info/RECORD", "bogus,,\n")
    return path


def test_wheels_are_installed_like_pip_would(tmp_path):
    wheel = _wheel(tmp_path)
    with ExitStack() as stack:
        site = "usr/local/lib/python3.11/dist-packages"
        scheme = layers.Scheme(site, "usr/local/include/python3.11")
        entries, installed = layers.wheel_entries([(wheel, wheel.name)], stack, epoch=EPOCH, scheme=scheme)
        by_path = {e.path: e for e in entries}
        assert f"{site}/demo_pkg/__init__.py" in by_path
        script = by_path["usr/local/bin/demo-script"]
        assert script.open().read().startswith(b"#!/usr/bin/python3\n") and script.mode == 0o755
        launcher = by_path["usr/local/bin/demo"].open().read().decode()
        assert "from demo_pkg import main" in launcher and launcher.startswith("#!/usr/bin/python3")
        assert by_path[f"{site}/demo_pkg-1.0.dist-info/INSTALLER"].open().read() == b"request-pack\n"
        record = by_path[f"{site}/demo_pkg-1.0.dist-info/RECORD"].open().read().decode()
        assert "bogus" not in record
        assert "../../../bin/demo," in record and "demo_pkg/__init__.py,sha256=" in record
        assert all(e.mtime == EPOCH for e in entries)
    assert installed[0].name == "demo_pkg"


def test_rootfs_entries_drop_host_leftovers_and_caches(tmp_path):
    src = tmp_path / "rootfs.tar"
    with tarfile.open(src, "w") as tar:
        for name, kind in [("./etc", tarfile.DIRTYPE), ("./etc/hostname", tarfile.REGTYPE), ("./etc/os-release", tarfile.REGTYPE),
                           ("./dev", tarfile.DIRTYPE), ("./dev/null", tarfile.CHRTYPE), ("./var/cache/apt/pkgcache.bin", tarfile.REGTYPE),
                           ("./usr/lib/python3/x/__pycache__/m.cpython-311.pyc", tarfile.REGTYPE), ("./var/log/dpkg.log", tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.type = kind
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    with tarfile.open(src) as tar:
        names = [e.path for e in layers.rootfs_entries(tar)]
    assert names == ["etc", "etc/os-release", "dev"]


def test_harness_layer_holds_the_harness_and_only_what_it_imports():
    dests = {dest for _, dest in harness_files()}
    assert "opt/request/packager/__init__.py" in dests
    assert "opt/request/packager/harness/__main__.py" in dests
    assert "opt/request/packager/errors.py" in dests and "opt/request/packager/results.py" in dests
    for outside in ("build.py", "cli.py", "oci.py", "engine/__init__.py", "runner.py", "lock.py"):
        assert f"opt/request/packager/{outside}" not in dests


def test_epoch_is_the_newest_deb_build_time(tmp_path):
    def deb(name: str, mtime: int) -> Path:
        p = tmp_path / name
        header = b"debian-binary".ljust(16) + str(mtime).encode().ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8) + b"4".ljust(10) + b"`\n"
        p.write_bytes(b"!<arch>\n" + header + b"2.0\n")
        return p

    assert deb_epoch([deb("a.deb", 1_600_000_000), deb("b.deb", 1_650_000_000)]) == 1_650_000_000


def test_missing_binfmt_is_an_environment_error(tmp_path):
    foreign = next(p for p in Platform if p is not Platform.native())
    with pytest.raises(EmulationMissing) as err:
        check_emulation(foreign, binfmt_dir=tmp_path)
    assert err.value.return_code == 3 and "binfmt" in str(err.value)
    (tmp_path / foreign.qemu_binfmt).write_text("enabled\ninterpreter /usr/libexec/qemu\nflags: F\n")
    check_emulation(foreign, binfmt_dir=tmp_path)


def test_a_plan_replays_with_the_standard_library_alone(tmp_path):
    """``python3 -S -m packager.image.writer.ociplan``: no site-packages (no pydantic), as in the Nix builder."""
    import subprocess
    import sys

    from packager.image.writer import ociplan

    src = tmp_path / "model.onnx"
    src.write_bytes(b"weights")
    wheel = _wheel(tmp_path)
    plan = {"plan_version": 1, "tag": "t", "platforms": [{
        "platform": oci.platform_json("linux", "arm64", "v8"), "epoch": EPOCH,
        "layers": [{"kind": "wheels", "wheels": [[str(wheel), wheel.name]],
                    "site_packages": "usr/local/lib/python3.11/dist-packages", "include": "usr/local/include/python3.11"},
                   {"kind": "files", "files": [[str(src), "/opt/request/model.onnx", 0o644]]}],
        "config": {"User": "1000:1000"}, "history": [{"created_by": "a"}, {"created_by": "b"}],
    }]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    in_process = ociplan.execute(plan, tmp_path / "a")
    repo = Path(ociplan.__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-S", "-E", "-m", "packager.image.writer.ociplan", str(tmp_path / "plan.json"), str(tmp_path / "b")],
                         cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == in_process.digest
    assert (tmp_path / "b" / "index.json").read_bytes() == (tmp_path / "a" / "index.json").read_bytes()


def test_check_diagnosis_names_platform_layer_and_file(tmp_path):
    from packager.image import build

    def image(out: Path, config: bytes) -> build.PlatformImage:
        blobs = out / "blobs" / "sha256"
        base = oci.write_layer(_entries(), blobs, EPOCH)
        model = oci.write_layer([_file("opt/request/model.onnx", config)], blobs, EPOCH)
        infos = tuple(build.LayerInfo(role, l.descriptor.digest, l.diff_id, l.descriptor.size, l.uncompressed_size, False)
                      for role, l in (("base", base), ("model", model)))
        desc = oci.Descriptor(oci.MT_MANIFEST, "sha256:" + hashlib.sha256(config).hexdigest(), 1)
        return build.PlatformImage(Platform.ARM64, desc, "sha256:" + "0" * 64, infos, None, EPOCH)  # type: ignore[arg-type]

    a, b = image(tmp_path / "a", b"one"), image(tmp_path / "b", b"two")
    text = build._diagnose(tmp_path / "a", [a], tmp_path / "b", [b])
    assert "linux/arm64 model layer" in text and "opt/request/model.onnx: content differs" in text
