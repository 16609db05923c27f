"""SIGTERM to a request-pack process mid-run removes its container (``kill``, ``timeout``, Slurm's end of a job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from runner_helpers import import_busybox

pytestmark = [pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_removes_the_running_container(docker_client, tmp_path):
    image = import_busybox(docker_client, tmp_path, tag="sigterm")
    label = f"sigterm-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from packager.cli import exit_on_sigterm
        from packager.engine.base import ContainerSpec
        from packager.engine.docker import Docker
        from packager.run.runner import run_container

        exit_on_sigterm()  # what the console script does first
        spec = ContainerSpec(image={image!r}, command=("sleep", "300"), labels={{"request-pack.test": {label!r}}})
        run_container(Docker(), spec, Path({str(tmp_path / "out")!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_API_VERSION": "1.41"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not docker_client.containers.list(filters={"label": f"request-pack.test={label}"}):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        left = docker_client.containers.list(all=True, filters={"label": f"request-pack.test={label}"})
        assert not left, f"container {left[0].id[:12]} outlived its run"
    finally:
        proc.kill()
        for c in docker_client.containers.list(all=True, filters={"label": f"request-pack.test={label}"}):
            c.remove(force=True)
