"""Rebuild in ten years: from the archive alone, with no network and an empty cache, the committed index digest.

For each example artifact that publishes ``image.json``: archive its inputs
from the warm cache, then in a fresh cache and a fresh network namespace with
no interfaces but loopback (``unshare -n``) fetch from the archive and build
every platform; the build must say ``match``. The bases are made again by
mmdebstrap in the fresh cache (arm64 and arm/v7 under QEMU): minutes each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.image.build import published

pytestmark = [pytest.mark.emulation, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = sorted(p.parent for p in (REPO / "artifacts").glob("*/image.json"))
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
    proof = _offline([*CLI, "fetch", str(artifact)], fresh)  # without the archive nothing can be had
    assert proof.returncode == 3, proof.stderr
    fetched = _offline([*CLI, "fetch", str(artifact), "--from", str(archive)], fresh)
    assert fetched.returncode == 0, fetched.stderr
    built = _offline([*CLI, "build", str(artifact), "--no-load", "--out", str(tmp_path / "build")], fresh)
    assert built.returncode == 0, built.stderr
    assert f"index {pub.index_digest}" in built.stdout
    assert "match:" in built.stdout
