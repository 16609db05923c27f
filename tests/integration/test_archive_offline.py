"""Rebuild in ten years: from the archive alone, with no network and an empty cache, the committed index digest.

For an example artifact that publishes ``image.json``: archive its inputs from
the warm cache, then in a fresh cache and a fresh network namespace with no
interfaces but loopback (``unshare -n``) fetch from the archive and build every
platform; the build must say ``match``.

Every input comes from the archive; only the base root filesystems, which are
products keyed by the sha256s of the locked .debs (not inputs), are shared from
the warm cache: made afresh they cost minutes per platform under QEMU, and the
suite has a 45-minute budget. ``build --check`` and the Nix witness cover the
bases' reproducibility. One artifact runs here; the others differ only in data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.cache import Cache
from packager.image.build import published

pytestmark = [pytest.mark.emulation, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = [REPO / "artifacts" / "efficientnet-lite0"]
CLI = [sys.executable, "-m", "packager.cli"]


def _offline(argv: list[str], cache: Path) -> subprocess.CompletedProcess:
    # a new network namespace: only a loopback that is down; any download attempt fails at once
    env = {**os.environ, "REQUEST_PACK_CACHE": str(cache), "COLUMNS": "400"}
    return subprocess.run(["unshare", "-n", *argv], env=env, capture_output=True, text=True, cwd=REPO)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare -n (root)")
@pytest.mark.parametrize("artifact", ARTIFACTS, ids=lambda p: p.name)
def test_fresh_cache_no_network_archive_gives_the_published_digest(artifact: Path, tmp_path: Path) -> None:
    pub = published(artifact)
    assert pub is not None
    archive = tmp_path / f"{artifact.name}.tar"
    subprocess.run([*CLI, "archive", str(artifact), "--out", str(archive)], check=True, cwd=REPO)
    fresh = tmp_path / "cache"
    fresh.mkdir()
    (fresh / "rootfs").symlink_to(Cache.open(None).subdir("rootfs"), target_is_directory=True)
    proof = _offline([*CLI, "fetch", str(artifact)], fresh)  # without the archive nothing can be had
    assert proof.returncode == 3, proof.stderr
    fetched = _offline([*CLI, "fetch", str(artifact), "--from", str(archive)], fresh)
    assert fetched.returncode == 0, fetched.stderr
    built = _offline([*CLI, "build", str(artifact), "--no-load", "--out", str(tmp_path / "build")], fresh)
    assert built.returncode == 0, built.stderr
    assert f"index {pub.index_digest}" in built.stdout
    assert "match:" in built.stdout
