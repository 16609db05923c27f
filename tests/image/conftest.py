"""A running container of each platform's image, as a testinfra host.

The images come from ``build.build`` of the locked ``build-small`` fixture (the
same cache as the build tests, so nothing is rebuilt when those ran first),
loaded into docker; each container sleeps until the session ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from build_helpers import ALL_PLATFORMS, locked_copy  # noqa: E402


@pytest.fixture(scope="session")
def image_build(tmp_path_factory):
    from packager.image import build

    artifact = locked_copy(tmp_path_factory.mktemp("image"))
    result = build.build(artifact, build.BuildOptions(platforms=ALL_PLATFORMS))
    loaded = build.load_into(result, "docker")
    lock = json.loads((artifact / "request.lock").read_text())
    return result, loaded, lock


@pytest.fixture(scope="session", params=[p.value for p in ALL_PLATFORMS], ids=[p.slug for p in ALL_PLATFORMS])
def container(request, image_build):
    import testinfra

    from packager.platforms import Platform

    result, loaded, lock = image_build
    platform = Platform(request.param)
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "--network", "none", "--platform", platform.value, "--entrypoint", "sleep",
         loaded[platform.value], "infinity"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    try:
        yield platform, testinfra.get_host(f"docker://{cid}"), lock
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
