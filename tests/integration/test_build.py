"""`request-pack build` for real: mmdebstrap, QEMU, docker, podman, a local registry.

One locked copy of ``tests/data/build-small`` (all three platforms) is built
once per session; the base root filesystems come from the normal cache, so only
the first run on a machine pays for mmdebstrap under QEMU (~4 min per foreign
arch). Everything after that writes layers and documents only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packager.contract import MODEL_PATH
from packager.engine import get_engine, local_ref
from packager.image import build
from packager.platforms import Platform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from build_helpers import ALL_PLATFORMS, locked_copy  # noqa: E402

pytestmark = [pytest.mark.network, pytest.mark.emulation, pytest.mark.slow]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return locked_copy(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def built(artifact) -> build.BuildResult:
    return build.build(artifact, build.BuildOptions(platforms=ALL_PLATFORMS))


def test_two_builds_from_clean_layer_state_give_the_same_index(artifact):
    res = build.check(artifact, build.BuildOptions(platforms=ALL_PLATFORMS))
    assert res.index_digests[0] == res.index_digests[1]
    print(f"\nindex {res.index_digests[0]}; clean builds took {res.seconds[0]} s and {res.seconds[1]} s")


def test_the_build_gives_the_checked_digest_and_a_complete_record(artifact, built):
    record = json.loads((built.build_dir / build.RECORD_NAME).read_text())
    assert record["index_digest"] == built.index.digest
    assert set(record["platforms"]) == {p.value for p in ALL_PLATFORMS}
    index = json.loads((built.layout / "blobs" / "sha256" / built.index.hex).read_bytes())
    by_platform = {(m["platform"]["architecture"], m["platform"].get("variant")): m for m in index["manifests"]}
    for plat in ALL_PLATFORMS:
        entry = record["platforms"][plat.value]
        assert by_platform[(plat.architecture, plat.variant)]["digest"] == entry["manifest_digest"]
        assert [layer["role"] for layer in entry["layers"]] == ["base", "wheels", "harness", "model"]
    assert record["lock_sha256"] and record["manifest_sha256"] and record["builder"]["zlib"]
    # The layout is what skopeo reads; an inspect proves it is a valid OCI layout.
    out = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{built.layout}:latest"], capture_output=True, check=True)
    assert json.loads(out.stdout)["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_sbom_and_provenance_cover_every_locked_input(artifact, built):
    lock = json.loads((artifact / "request.lock").read_text())
    sbom = json.loads((built.build_dir / build.SBOM_NAME).read_text())
    sums = {c["checksumValue"] for p in sbom["packages"] for c in p.get("checksums", [])}
    wanted = {lock["model"]["sha256"]}
    for plat in lock["platforms"].values():
        wanted |= {d["sha256"] for d in plat["debian"]["packages"]} | {w["sha256"] for w in plat["wheels"]}
    assert wanted <= sums
    assert sbom["spdxVersion"] == "SPDX-2.3"
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import (
        validate_full_spdx_document,
    )

    assert validate_full_spdx_document(parse_file(str(built.build_dir / build.SBOM_NAME))) == []
    prov = json.loads((built.build_dir / build.PROVENANCE_NAME).read_text())
    assert prov["predicateType"] == "https://slsa.dev/provenance/v1"
    assert prov["subject"][0]["digest"]["sha256"] == built.index.hex
    deps = {d["digest"]["sha256"] for d in prov["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert wanted <= deps


def test_no_change_rebuild_reuses_every_layer_and_rewrites_the_same_documents(artifact, built):
    docs = {name: (built.build_dir / name).read_bytes() for name in (build.SBOM_NAME, build.PROVENANCE_NAME)}
    time.sleep(1.1)  # the record's times have one-second resolution: the rebuild's must differ
    start = time.monotonic()
    again = build.build(artifact, build.BuildOptions(platforms=ALL_PLATFORMS))
    seconds = time.monotonic() - start
    assert again.index.digest == built.index.digest
    assert all(layer.cached for img in again.images for layer in img.layers)
    # The SBOM and provenance are functions of the inputs; when the build ran is the record's.
    assert {name: (again.build_dir / name).read_bytes() for name in docs} == docs
    assert again.record["times"]["started"] != built.record["times"]["started"]
    print(f"\nno-change rebuild of 3 platforms: {seconds:.1f} s; sbom and provenance byte-identical")


@pytest.mark.docker
def test_each_platform_starts_in_docker_and_reports_its_machine(built):
    docker = get_engine("docker")
    loaded = build.load_into(built, "docker")
    for img in built.images:
        assert docker.image_id(loaded[img.platform.value]) == img.config_digest
        res = docker.run(loaded[img.platform.value], ["-m"], platform=img.platform, entrypoint="uname")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == img.platform.uname_machine


@pytest.mark.podman
def test_podman_holds_the_same_image_as_docker(built):
    podman = get_engine("podman")
    loaded = build.load_into(built, "podman")
    for img in built.images:
        assert podman.image_id(loaded[img.platform.value]) == img.config_digest
    native = next(i for i in built.images if i.platform is Platform.native())
    res = podman.run(loaded[native.platform.value], ["-c", "id -u; test -f /opt/request/model.onnx"],
                     platform=native.platform, entrypoint="sh")
    assert res.returncode == 0 and res.stdout.split() == ["1000"], res.stderr


def test_model_only_change_rebuilds_only_the_model_layer(tmp_path, built):
    # A model this machine has never built (the layer cache outlives test runs).
    changed = locked_copy(tmp_path, model=f"a different placeholder model {os.urandom(8).hex()}\n".encode())
    result = build.build(changed, build.BuildOptions(platforms=ALL_PLATFORMS, build_root=tmp_path / "out"))
    assert result.index.digest != built.index.digest
    for old, new in zip(built.images, result.images):
        roles = {a.role: (a.digest, b.digest, b.cached) for a, b in zip(old.layers, new.layers)}
        for role in ("base", "wheels", "harness"):
            assert roles[role][0] == roles[role][1] and roles[role][2], f"{old.platform} {role} layer was rebuilt"
        assert roles["model"][0] != roles["model"][1]
    # Platforms with the same epoch share the (architecture-independent) model layer: written once.
    assert not result.images[0].layers[3].cached


def test_push_keeps_the_index_digest(built, registry):
    ref = build.push_to(built, registry)
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, check=True)
    import hashlib

    assert "sha256:" + hashlib.sha256(out.stdout).hexdigest() == built.index.digest


# --- bad input: one line, the right exit code, nothing left as if complete ----------------------


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_missing_lock_is_bad_input(tmp_path):
    art = tmp_path / "artifacts" / "build-small"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "build-small", art,
                    ignore=shutil.ignore_patterns("request.lock"))
    res = _cli("build", str(art), "--no-load")
    assert res.returncode == 2, res.stderr
    assert "request.lock" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "build" / "build-small" / "build-record.json").exists()


def test_cache_file_with_wrong_bytes_is_a_failed_check(artifact, tmp_path):
    from packager.inputs.lockfile import load_lock

    lock = load_lock(artifact / "request.lock")
    bad = tmp_path / "cache" / "cas" / "sha256" / lock.model.sha256[:2] / lock.model.sha256
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"tampered\n")
    res = _cli("build", str(artifact), "--no-load", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"))
    assert res.returncode == 1, res.stderr
    assert "sha256 mismatch" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "build-small" / "build-record.json").exists()


@pytest.mark.docker
def test_engine_down_is_an_environment_error(artifact, tmp_path):
    res = _cli("build", str(artifact), "--out", str(tmp_path / "out"), env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert res.returncode == 3, res.stderr
    assert "docker" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.docker
def test_rendered_dockerfile_builds_the_same_files_natively(built, tmp_path):
    native = Platform.native()
    tag = f"request-pack-test/dockerfile:{native.slug}"
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    subprocess.run(["docker", "build", "-q", "--target", native.slug, "-t", tag, "."], cwd=built.build_dir, env=env,
                   check=True, capture_output=True, timeout=900)
    try:
        docker = get_engine("docker")
        res = docker.run(tag, ["-c", f"id -u; sha256sum {MODEL_PATH}"], platform=native, entrypoint="sh")
        ours = docker.run(local_ref(built.name, native), ["-c", f"id -u; sha256sum {MODEL_PATH}"],
                          platform=native, entrypoint="sh") if docker.image_id(local_ref(built.name, native)) else None
        assert res.returncode == 0, res.stderr
        lines = res.stdout.split("\n")
        assert lines[0] == "1000"
        assert lines[1].split()[0] == json.loads((built.build_dir / build.RECORD_NAME).read_text())["platforms"][native.value]["layers"][3]["detail"].split()[-1]
        if ours is not None:
            assert ours.stdout == res.stdout
    finally:
        subprocess.run(["docker", "image", "rm", tag], capture_output=True)
