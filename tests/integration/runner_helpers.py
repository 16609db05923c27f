"""Shared by the runner's integration tests: a tiny busybox image, a loop device, and a
uniquely versioned build of the example artifact for the evaluate tests (ssh, registry).

The busybox image is imported from Debian's static busybox (``busybox-static``), so the
device and sandbox tests need neither the real build nor a registry.
"""

from __future__ import annotations

import grp
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

APPLETS = ("sh", "ls", "cat", "id", "echo", "sleep", "test", "mkdir", "uname", "head", "wc", "grep",
           "touch", "stat", "chown", "true", "od", "env", "sed", "seq", "dd", "rm", "tr", "cut")
BUSYBOX_REPO = "request-pack-test/busybox"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a service a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``request-pack ARGS`` with the interpreter running the tests, output captured."""
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], cwd=cwd, capture_output=True, text=True)


def copy_with_unique_version(source: Path, root: Path, tag: str) -> Path:
    """``root/artifacts/<name>``, a copy of ``source`` whose version (a config label) makes an image no engine holds."""
    art = root / "artifacts" / source.name
    shutil.copytree(source, art)
    text = (art / "request.yaml").read_text()
    assert "\nversion: 1.0.0\n" in text
    (art / "request.yaml").write_text(text.replace("\nversion: 1.0.0\n", f"\nversion: 1.0.0+{tag}.{uuid.uuid4().hex[:12]}\n"))
    return art


def busybox_tar() -> bytes:
    if not Path("/bin/busybox").is_file():
        raise RuntimeError("busybox-static is not installed (apt-get install -y busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("bin", "tmp", "data", "out", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tf.addfile(ti)
        data = Path("/bin/busybox").read_bytes()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode = len(data), 0o755
        tf.addfile(ti, io.BytesIO(data))
        for name, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
            # merged /usr, so a host /usr bound read-only brings a working dynamic loader
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
        for applet in APPLETS:
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tf.addfile(ti)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nrunner:x:1000:1000::/tmp:/bin/sh\n"
        ti = tarfile.TarInfo("etc/passwd")
        ti.size, ti.mode = len(passwd), 0o644
        tf.addfile(ti, io.BytesIO(passwd))
    return buf.getvalue()


def import_busybox(client, tmp: Path, *, tag: str = "latest", env: dict[str, str] | None = None) -> str:
    """Import the busybox image into the docker daemon of ``client``; return its id (sha256:…)."""
    tar = tmp / "busybox.tar"
    tar.write_bytes(busybox_tar())
    changes = ["ENTRYPOINT []"] + [f"ENV {k}={v}" for k, v in (env or {}).items()]
    client.api.import_image_from_file(str(tar), repository=BUSYBOX_REPO, tag=tag, changes=changes)
    return client.api.inspect_image(f"{BUSYBOX_REPO}:{tag}")["Id"]


class LoopDevice:
    """A real block device: a loop device over a temp file with a known first block."""

    def __init__(self, tmp: Path, marker: bytes) -> None:
        self.backing = tmp / "loop.img"
        with self.backing.open("wb") as f:
            f.write(marker.ljust(4096, b"\0"))
            f.truncate(1 << 20)
        self.path = subprocess.run(["losetup", "-f", "--show", str(self.backing)], check=True,
                                   capture_output=True, text=True).stdout.strip()
        # What udev does for accelerator nodes (GROUP="disk", MODE="0660"); without udev the node is root-only.
        os.chown(self.path, -1, grp.getgrnam("disk").gr_gid)
        os.chmod(self.path, 0o660)

    def close(self) -> None:
        subprocess.run(["losetup", "-d", self.path], check=False)


EXAMPLE_ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "efficientnet-lite0"
_BUILT: list = []


def _unique_artifact(tmp_path_factory, docker_client):
    """The example artifact with a version of its own (a label in the config, so its image exists nowhere
    else and a test may remove it from the engine), locked, fetched and built for amd64, loaded nowhere.
    Yields (artifact dir, build record)."""
    import json

    if _BUILT:
        # Each module importing the fixture gets its own FixtureDef, so session scope alone would build twice.
        yield _BUILT[0]
        return
    root = tmp_path_factory.mktemp("unique-artifact")
    art = copy_with_unique_version(EXAMPLE_ARTIFACT, root, "test")
    for step in (["lock", str(art)], ["fetch", str(art)], ["build", str(art), "--platform", "linux/amd64", "--no-load"]):
        res = cli(*step, cwd=root)
        assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    record = json.loads((root / "build" / art.name / "build-record.json").read_text())
    _BUILT.append((art, record))
    yield art, record
    forget_image(docker_client, record["platforms"]["linux/amd64"]["config_digest"])


def forget_image(docker_client, image_id: str) -> None:
    """Remove an image only this test session made (see ``_unique_artifact``)."""
    import docker.errors

    try:
        docker_client.images.remove(image_id, force=True)
    except docker.errors.ImageNotFound:
        pass


# Imported by the modules that use it; session scope builds it once for all of them.
unique_artifact = pytest.fixture(scope="session")(_unique_artifact)


def assert_two_thread_points_of_one_image(board_db: Path):
    """A run-time sweep over threads 1 and 2 at batch 1: one sweep group of two verified results of ONE
    image, each with its own signed run config. Returns the sweep for further checks."""
    import json

    import sqlalchemy as sa

    from packager.scoreboard.store import Board, results
    from packager.scoreboard.sweeps import list_sweeps, load_sweep

    with Board(f"sqlite:///{board_db}") as board:
        with board.engine.connect() as conn:
            rows = conn.execute(sa.select(results.c.image_digest, results.c.detail)).all()
        (summary,) = list_sweeps(board)
        sweep = load_sweep(board, summary.id)
    assert len(rows) == 2 and len({r.image_digest for r in rows}) == 1
    configs = sorted(json.dumps(json.loads(r.detail)["predicate"]["run"]["run_config"], sort_keys=True) for r in rows)
    assert configs == ['{"batch": 1, "threads": 1}', '{"batch": 1, "threads": 2}']
    assert sweep is not None and (sweep.summary.done, sweep.summary.failed) == (2, 0)
    return sweep
