"""The inputs archive: deterministic bytes, offline fetch from it (no socket), tampering refused, snapshot fallback.

The artifact is tests/data/lock-basic with a lock whose .debs and wheels carry
real-looking pool and PyPI URLs; a real HTTP server on 127.0.0.1 plays the
pool that lost them and the snapshot service that kept them.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packager.cache import Cache
from packager.cli import app
from packager.errors import CacheMissError, IntegrityError
from packager.inputs import archive, download
from packager.inputs.lock import fetch
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
    locked_objects,
    template_hashes,
)
from packager.manifest import load_manifest
from packager.reproduce import write_archive

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "lock-basic"
POOL = "http://deb.debian.org/debian/pool/main"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_artifact(tmp_path: Path, *, deb_url=lambda name, arch: f"{POOL}/{name[0]}/{name}/{name}_1.0+b1_{arch}.deb",
                  locations=lambda data: None) -> tuple[Path, Cache]:
    """lock-basic with a lock over a filled cache; .debs named as in a pool (with a '+' apt quotes in URLs)."""
    art = tmp_path / "art"
    shutil.copytree(FIXTURE, art)
    cache = Cache.open(tmp_path / "cache")
    manifest = load_manifest(art)
    model_sha = cache.put_file(art / "model.onnx", manifest.model.sha256)
    platforms = {}
    for plat in manifest.platforms:
        debs = []
        for name in ("libc6", "python3"):
            data = f"{name} for {plat.debian_arch}\n".encode()
            cache.put_bytes(data)
            filename = f"{name}_1.0+b1_{plat.debian_arch}.deb"
            debs.append(DebEntry(name=name, version="1.0+b1", architecture=plat.debian_arch, filename=filename,
                                 size=len(data), sha256=_sha(data),
                                 url=deb_url(name, plat.debian_arch).replace("+", "%2b"), locations=locations(data)))
        data = f"wheel for {plat.value}\n".encode()
        cache.put_bytes(data)
        wheels = [WheelEntry(name="demo", version="1.0", filename=f"demo-1.0-py3-none-{plat.debian_arch}.whl",
                             size=len(data), sha256=_sha(data), url=f"https://files.example/demo-{plat.debian_arch}.whl",
                             requested=True)]
        platforms[plat.value] = PlatformLock(
            debian=DebianLock(arch=plat.debian_arch, suite="bookworm", packages=debs,
                              sources=[AptSourceEntry(url="http://deb.debian.org/debian", suite="bookworm", component="main")]),
            wheels=wheels)
    model = ModelLock(sha256=model_sha, filename="model.onnx",
                      source=ModelSourceLock(kind="file", path="model.onnx", sha256=model_sha,
                                             size=(art / "model.onnx").stat().st_size))
    lock = Lock(lock_version=1, generator="request-pack", artifact=manifest.name, manifest_sha256=manifest.digest(),
                model=model, templates=template_hashes(), python=PythonTarget(), platforms=platforms)
    (art / "request.lock").write_bytes(lock.to_bytes())
    return art, cache


@pytest.fixture()
def artifact(tmp_path: Path) -> tuple[Path, Cache]:
    return make_artifact(tmp_path)


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any name lookup or connection fails the test: proof that nothing is contacted."""
    attempts: list[str] = []

    def refuse(*args, **kw):
        attempts.append(repr(args[:2]))
        raise AssertionError(f"network contacted: {args[:2]!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_the_same_lock_gives_the_same_archive_bytes(artifact, tmp_path: Path) -> None:
    art, cache = artifact
    a = write_archive(archive.plan(art, cache), tmp_path / "a.tar")
    b = write_archive(archive.plan(art, cache), tmp_path / "b.tar")
    assert a.sha256 == b.sha256 and a.path.read_bytes() == b.path.read_bytes()
    with tarfile.open(a.path) as tar:  # a plain tar any tool reads
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert "lock-basic/debian/pool/main/l/libc6/libc6_1.0+b1_arm64.deb" in names  # the pool path, unquoted
    index = archive.read_index(a.path)
    shas = {e["sha256"] for e in index["entries"]}
    assert {o.sha256 for o in locked_objects(Lock.model_validate_json((art / "request.lock").read_text()))} <= shas
    assert {"manifest request.yaml", "lock request.lock"} <= {e["entry"] for e in index["entries"]}


def test_fetch_from_the_archive_fills_an_empty_cache_without_a_socket(artifact, tmp_path: Path, no_network) -> None:
    art, cache = artifact
    written = write_archive(archive.plan(art, cache), tmp_path / "inputs.tar")
    fresh = Cache.open(tmp_path / "fresh")
    result = fetch(art, written.path, cache=fresh)
    assert result.frozen and not no_network
    for o in locked_objects(result.lock):
        fresh.path_of(o.sha256, verify=True)


def test_fetch_from_a_directory_of_loose_files(artifact, tmp_path: Path, no_network) -> None:
    art, cache = artifact
    loose = tmp_path / "kept"
    loose.mkdir()
    for i, o in enumerate(locked_objects(Lock.model_validate_json((art / "request.lock").read_text()))):
        shutil.copyfile(cache.object_path(o.sha256), loose / f"any-name-{i}")
    assert fetch(art, loose, cache=Cache.open(tmp_path / "fresh")).frozen


def test_a_tampered_member_is_refused_with_the_entry_name(artifact, tmp_path: Path, no_network) -> None:
    art, cache = artifact
    written = write_archive(archive.plan(art, cache), tmp_path / "inputs.tar")
    target = "lock-basic/debian/pool/main/p/python3/python3_1.0+b1_amd64.deb"
    with tarfile.open(written.path) as tar:
        offset = tar.getmember(target).offset_data
    data = bytearray(written.path.read_bytes())
    data[offset] ^= 0xFF  # same size, other bytes
    written.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as e:
        fetch(art, written.path, cache=Cache.open(tmp_path / "fresh"))
    assert "linux/amd64 deb python3_1.0+b1_amd64.deb" in str(e.value) and target in str(e.value)
    out = CliRunner().invoke(app, ["fetch", str(art), "--from", str(written.path), "--cache", str(tmp_path / "fresh2")])
    assert out.exit_code == 1


def test_an_archive_missing_an_entry_says_which_and_contacts_nobody(artifact, tmp_path: Path, no_network) -> None:
    art, cache = artifact
    plan = archive.plan(art, cache)
    dropped = next(m for m in plan.members if m.path.endswith("libc6_1.0+b1_armhf.deb"))
    partial = archive.Plan(plan.top, plan.index, tuple(m for m in plan.members if m is not dropped))
    written = write_archive(partial, tmp_path / "partial.tar")
    with pytest.raises(CacheMissError, match=r"linux/arm/v7 deb libc6_1.0\+b1_armhf.deb is not in .*nothing else is contacted"):
        fetch(art, written.path, cache=Cache.open(tmp_path / "fresh"))


def test_archive_names_an_entry_the_cache_lacks(artifact, tmp_path: Path) -> None:
    art, _ = artifact
    with pytest.raises(CacheMissError, match="is not in the cache: run `request-pack fetch"):
        archive.plan(art, Cache.open(tmp_path / "empty"))


class _Pool:
    """An unpacked archive served over HTTP on 127.0.0.1: the pool layout a snapshot or mirror would have."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None  # type: ignore[attr-defined]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fetch_falls_back_to_the_recorded_locations_in_order(tmp_path: Path) -> None:
    # 1. an archive of the artifact, unpacked and served: the pool that still has every .deb
    art, cache = make_artifact(tmp_path / "origin")
    written = write_archive(archive.plan(art, cache), tmp_path / "inputs.tar")
    served = tmp_path / "served"
    with tarfile.open(written.path) as tar:
        tar.extractall(served, filter="data")
    pool = _Pool(served / "lock-basic")
    try:
        # 2. the lock's own URLs point at a pool that lost them (404); the recorded locations at the served one
        gone = f"{pool.url}/gone/debian/pool/main"
        art2, _ = make_artifact(tmp_path / "user", deb_url=lambda n, a: f"{gone}/{n[0]}/{n}/{n}_1.0+b1_{a}.deb",
                                locations=lambda data: None)
        lock = json.loads((art2 / "request.lock").read_text())
        for plat in lock["platforms"].values():
            for d in plat["debian"]["packages"]:
                d["locations"] = [f"{pool.url}/nowhere/{d['filename']}",
                                  f"{pool.url}/debian/pool/main/{d['name'][0]}/{d['name']}/{d['filename']}"]
            for w in plat["wheels"]:
                w["url"] = f"{pool.url}/pypi/{w['filename']}"
        (art2 / "request.lock").write_text(json.dumps(lock))
        fresh = Cache.open(tmp_path / "fresh")
        result = fetch(art2, cache=fresh, policy=download.Policy(attempts=2, backoff=0.01, timeout=5))
        assert result.frozen
        deb = result.lock.platforms["linux/arm64"].debian.packages[0]
        assert fresh.describe(deb.sha256)["urls"] == [deb.locations[1]]  # the third location served it
    finally:
        pool.close()


def test_the_archive_carries_the_harness_source_and_restores_it_for_another_checkout(artifact, tmp_path: Path) -> None:
    """request-pack's own files the harness layer is made from travel in the archive, by sha256 and mode."""
    from packager.image.plan import PACKAGE_ROOT, harness_files, harness_version
    from packager.reproduce import harness_sources, plan_archive

    art, cache = artifact
    written = write_archive(plan_archive(art, cache), tmp_path / "inputs.tar")
    assert write_archive(plan_archive(art, cache), tmp_path / "again.tar").sha256 == written.sha256
    mine = {dest: hashlib.sha256(src.read_bytes()).hexdigest() for src, dest in harness_files()}
    index = archive.read_index(written.path)
    carried = {e["path"]: e for e in index["entries"] if e["entry"].startswith("request-pack ")}
    assert len(carried) == len(harness_sources()) == len(mine) + 1  # and the Dockerfile template, below
    assert carried["request-pack/packager/harness/__main__.py"]["sha256"] == _sha(
        (PACKAGE_ROOT / "harness" / "__main__.py").read_bytes())
    assert all(e["mode"] in (0o644, 0o755) for e in carried.values())

    root = archive.restore_sources(written.path, tmp_path / "source")
    assert root == tmp_path / "source" / "packager"
    # the restored tree is closed under the harness's imports: it yields exactly the same layer files
    theirs = {dest: hashlib.sha256(src.read_bytes()).hexdigest() for src, dest in harness_files(root)}
    assert theirs == mine and harness_version(root) == harness_version()
    # the Dockerfile template is in no image, but the lock records its sha256 and a build refuses a stale lock:
    # the archive carries it, and a build from the restored source compares the lock with it, not the checkout's
    from packager.image.plan import templates_beside
    from packager.inputs.lockfile import load_lock

    assert "request-pack/dockerfiles/Dockerfile.j2" in carried
    assert templates_beside(root) == tmp_path / "source" / "dockerfiles"
    assert template_hashes(templates_beside(root)) == template_hashes() == load_lock(art / "request.lock").templates
    # an archive from before it carried sources restores none (reproduce then says it used this checkout)
    old = write_archive(archive.plan(art, cache), tmp_path / "old.tar")
    assert archive.restore_sources(old.path, tmp_path / "none") is None


def test_a_tampered_harness_source_is_refused_with_its_name(artifact, tmp_path: Path) -> None:
    from packager.reproduce import plan_archive

    art, cache = artifact
    written = write_archive(plan_archive(art, cache), tmp_path / "inputs.tar")
    target = "lock-basic/request-pack/packager/harness/__main__.py"
    with tarfile.open(written.path) as tar:
        offset = tar.getmember(target).offset_data
    data = bytearray(written.path.read_bytes())
    data[offset] ^= 0x01
    written.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"request-pack/packager/harness/__main__.py \(request-pack packager/harness/__main__.py\)"):
        archive.restore_sources(written.path, tmp_path / "source")


def test_the_target_debs_of_a_cross_build_record_their_snapshot_locations(artifact, tmp_path: Path) -> None:
    """A built wheel's target .debs (its build inputs) carry snapshot locations as the image's .debs do."""
    from packager.inputs import debian
    from packager.inputs.sourcebuild import PinnedFile, SourceBuildLock

    art, cache = artifact
    deb = tmp_path / "libpython3.11-dev_3.11.2-6+deb12u6_arm64.deb"
    deb.write_bytes(b"target headers\n")
    locs = debian.snapshot_locations(deb)
    assert locs == [f"https://snapshot.debian.org/file/{hashlib.sha1(deb.read_bytes()).hexdigest()}"]
    url = "http://deb.debian.org/debian/pool/main/p/python3.11/libpython3.11-dev_3.11.2-6+deb12u6_arm64.deb"
    old = PinnedFile(filename=deb.name, size=deb.stat().st_size, sha256=_sha(deb.read_bytes()), url=url)
    new = old.model_copy(update={"locations": locs})
    assert "locations" not in old.model_dump() and new.model_dump()["locations"] == locs  # old locks keep their bytes
    sdist = PinnedFile(filename="demo-1.0.tar.gz", size=1, sha256="1" * 64, url="https://files.example/demo-1.0.tar.gz")
    build = SourceBuildLock(recipe="setuptools-cross", recipe_version=1, target="linux/arm64", host="linux/amd64",
                            sdist=sdist, build_requires=[], target_debs=[new], toolchain={}, epoch=0)
    assert build.key() == build.model_copy(update={"target_debs": [old]}).key()  # where bytes live is not what they are
    lock = Lock.model_validate_json((art / "request.lock").read_text())
    plat = lock.platforms["linux/arm64"]
    built = WheelEntry(name="demo", version="1.0", filename="demo-1.0-cp311-cp311-linux_aarch64.whl", size=1,
                       sha256="2" * 64, requested=True, build=build)
    lock = lock.model_copy(update={"platforms": {**lock.platforms, "linux/arm64": plat.model_copy(update={"wheels": [built]})}})
    obj = next(o for o in locked_objects(lock) if o.name.endswith(f"build input {deb.name} of {built.filename}"))
    assert obj.sources == (url, *locs)  # fetch tries the pool, then the snapshot service
