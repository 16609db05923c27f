"""A killed job leaves its container in the engine; a resumed attempt finds and removes it (farm.node step 3,
explore's resume) through the engine it ran on, docker or podman: real engines, a real running container.

The image is one static binary (the engine's own init, catatonit, in pause mode), imported by the engine, so the
test takes seconds and needs nothing built.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from packager.contract import SANDBOX
from packager.engine import ContainerSpec, MountSpec, get_engine
from packager.farm.node import RUN_LABEL, remove_stale_containers

PAUSE = Path("/usr/bin/catatonit")  # static; installed with podman by scripts/setup.sh


def _pause_image(engine: str) -> str:
    if not PAUSE.is_file():
        pytest.fail(f"{PAUSE} is missing: scripts/setup.sh installs podman (catatonit)", pytrace=False)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(PAUSE, arcname="pause")
    ref = f"localhost/request-pack-test/pause:{uuid.uuid4().hex[:8]}"
    exe = shutil.which(engine)
    assert exe is not None
    subprocess.run([exe, "import", "-", ref], input=buf.getvalue(), check=True, capture_output=True, timeout=120)
    return ref


@pytest.mark.parametrize("engine", [pytest.param("docker", marks=pytest.mark.docker),
                                    pytest.param("podman", marks=pytest.mark.podman)])
def test_leftover_container_of_a_job_is_found_and_removed(engine, tmp_path):
    eng = get_engine(engine)
    image = _pause_image(engine)
    job_dir, other_dir = tmp_path / "job", tmp_path / "other"
    job_dir.mkdir()
    other_dir.mkdir()
    started = []
    try:
        for mount in (job_dir, other_dir):
            spec = ContainerSpec(image=image, command=("/pause", "-P"), labels={RUN_LABEL: uuid.uuid4().hex},
                                 mounts=(MountSpec(str(mount), "/work", read_only=False),), read_only_rootfs=False,
                                 init=False, user="0", ulimits=dict(SANDBOX["ulimits"]))
            started.append(eng.start(spec))
        leftover, unrelated = (c.id for c in started)
        assert eng.containers_mounting(job_dir, RUN_LABEL) == [leftover]

        assert remove_stale_containers(job_dir, engine) == [leftover]

        assert eng.containers_mounting(job_dir, RUN_LABEL) == []
        # the container of another job, with a mount elsewhere, is not touched
        assert eng.containers_mounting(other_dir, RUN_LABEL) == [unrelated]
    finally:
        for c in started:
            c.remove()
        eng.remove_image(image)
