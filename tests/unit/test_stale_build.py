"""An existing build is reused only when it holds this request.yaml, this request.lock and this harness."""

from __future__ import annotations

import json
from pathlib import Path

from packager.cache import sha256_file
from packager.image.plan import harness_source_sha256
from packager.platforms import Platform
from packager.pipeline import stale_build
from packager.run.runner import ImageRef


def _ref(tmp_path: Path, **record) -> ImageRef:
    path = tmp_path / "build-record.json"
    path.write_text(json.dumps(record))
    return ImageRef("a", Platform.AMD64, "sha256:" + "0" * 64, record=path)


def _artifact(tmp_path: Path) -> Path:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "request.lock").write_text("{}\n")
    return artifact


def test_a_build_of_this_manifest_lock_and_harness_is_reused(tmp_path):
    artifact = _artifact(tmp_path)
    ref = _ref(tmp_path, manifest_sha256="m" * 64, lock_sha256=sha256_file(artifact / "request.lock"),
               harness_sha256=harness_source_sha256())
    assert stale_build(ref, artifact, "m" * 64) is None


def test_another_harness_lock_or_manifest_makes_the_build_stale(tmp_path):
    artifact = _artifact(tmp_path)
    lock = sha256_file(artifact / "request.lock")
    assert stale_build(_ref(tmp_path, manifest_sha256="m" * 64, lock_sha256=lock, harness_sha256="h" * 64),
                       artifact, "m" * 64) == "made from another harness"
    assert stale_build(_ref(tmp_path, manifest_sha256="x" * 64, lock_sha256="l" * 64,
                            harness_sha256=harness_source_sha256()), artifact, "m" * 64) == "made from another manifest, lock"
    # a record from before harness_sha256 was recorded cannot show it holds this harness
    assert stale_build(_ref(tmp_path, manifest_sha256="m" * 64, lock_sha256=lock), artifact, "m" * 64) == "made from another harness"


def test_the_harness_digest_follows_the_harness_sources(tmp_path):
    import shutil

    from packager.image.plan import PACKAGE_ROOT

    copy = tmp_path / "packager"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert harness_source_sha256(copy) == harness_source_sha256()
    config = copy / "harness" / "config.py"
    config.write_text(config.read_text() + "\n# another harness\n")
    assert harness_source_sha256(copy) != harness_source_sha256()
