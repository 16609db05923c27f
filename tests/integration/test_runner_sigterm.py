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


@pytest.mark.parametrize("where", ["create", "start"])
def test_sigterm_inside_container_creation_leaves_no_container(docker_client, tmp_path, where):
    """Issue 17: SIGTERM between the engine creating the container and the runner holding it.

    The window is hit on purpose, 8 times per point: the process signals itself right after
    docker's create call returns (inside ``engine.start``, before it starts the container) or
    right after ``engine.start`` returns (before ``run_container`` has its handle). Before the
    fix each of those left a container behind; now each run exits 143 and none is left."""
    image = import_busybox(docker_client, tmp_path, tag="sigterm")
    label = f"sigterm-window-{uuid.uuid4().hex[:8]}"
    rounds = 8
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import docker.models.containers as dm
        from packager.cli import exit_on_sigterm
        from packager.engine.base import ContainerSpec
        from packager.engine.docker import Docker
        from packager.run.runner import run_container

        exit_on_sigterm()  # what the console script does first
        WHERE = {where!r}
        create = dm.ContainerCollection.create

        def create_then_signal(self, *args, **kwargs):
            c = create(self, *args, **kwargs)
            if WHERE == "create":
                os.kill(os.getpid(), signal.SIGTERM)
            return c

        dm.ContainerCollection.create = create_then_signal

        class SignalAfterStart(Docker):
            def start(self, spec):
                c = super().start(spec)
                if WHERE == "start":
                    os.kill(os.getpid(), signal.SIGTERM)
                return c

        exits = []
        for i in range({rounds}):
            spec = ContainerSpec(image={image!r}, command=("sleep", "300"), labels={{"request-pack.test": {label!r}}})
            try:
                run_container(SignalAfterStart(), spec, Path({str(tmp_path / "out")!r}))
            except SystemExit as e:
                exits.append(e.code)
        print(exits)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_API_VERSION": "1.41"}
    try:
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.strip() == str([128 + signal.SIGTERM] * rounds), res.stdout + res.stderr[-2000:]
        left = docker_client.containers.list(all=True, filters={"label": f"request-pack.test={label}"})
        assert not left, f"{len(left)} container(s) outlived their run"
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"request-pack.test={label}"}):
            c.remove(force=True)
