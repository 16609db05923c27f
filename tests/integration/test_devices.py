"""Sandbox and device passthrough with the real engine and a real device node (a loop device).

The container is the busybox test image; what it sees is written into the
output directory, the only place it may write, and checked here.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from runner_helpers import BUSYBOX_REPO, LoopDevice, busybox_tar, import_busybox

from packager.engine.docker import Docker
from packager.engine.podman import Podman
from packager.errors import DeviceMissing
from packager.platforms import Platform
from packager.run.runner import ImageRef, RunOptions, run_in_sandbox
from packager.sections import Device

MARKER = b"REQUEST-PACK-LOOP-" + uuid.uuid4().hex[:8].encode()


@pytest.fixture(scope="module")
def busybox(docker_client, tmp_path_factory) -> ImageRef:
    image_id = import_busybox(docker_client, tmp_path_factory.mktemp("bb"))
    yield ImageRef("busybox-test", Platform.native(), image_id)
    docker_client.images.remove(image_id, force=True)


@pytest.fixture
def loop(tmp_path):
    dev = LoopDevice(tmp_path, MARKER)
    yield dev
    dev.close()


def _opts(tmp_path: Path, **kw) -> RunOptions:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "hello.txt").write_text("hello\n")
    return RunOptions(stage="functional", dataset=data, out=tmp_path / "out", platform=Platform.native(), **kw)


PROBE = (
    "id -u > /out/uid; id -G > /out/groups; cat /data/hello.txt > /out/data_read; "
    "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status > /out/status; ls /sys/class/net > /out/net; "
    "(touch /rootfs_write 2>/dev/null && echo yes || echo no) > /out/root_writable; "
    "(touch /data/x 2>/dev/null && echo yes || echo no) > /out/data_writable; "
    "(touch /tmp/x && echo yes || echo no) > /out/tmp_writable; "
    "ulimit -n > /out/nofile; "
)


@pytest.mark.docker
def test_sandbox_is_enforced_and_recorded(busybox, tmp_path):
    opts = _opts(tmp_path)
    result = run_in_sandbox(Docker(), busybox, ["sh", "-c", PROBE], opts)
    out = opts.out
    assert result.exit_code == 0, (out / "logs" / "container.log").read_text()
    assert (out / "uid").read_text().strip() == "1000"
    assert (out / "data_read").read_text() == "hello\n"
    status = dict(line.split(":\t") for line in (out / "status").read_text().splitlines())
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["NoNewPrivs"].strip() == "1"
    assert (out / "net").read_text().split() == ["lo"]
    assert (out / "root_writable").read_text().strip() == "no"
    assert (out / "data_writable").read_text().strip() == "no"
    assert (out / "tmp_writable").read_text().strip() == "yes"
    assert (out / "nofile").read_text().strip() == "20000"
    record = json.loads((out / "run.json").read_text())
    assert record["image"]["config_digest"] == busybox.config_digest
    assert record["sandbox"]["network"] == "none" and record["sandbox"]["cap_drop"] == ["ALL"]
    assert record["sandbox"]["user"] == "1000:1000"


@pytest.mark.docker
def test_loop_device_passed_through_with_its_group(busybox, loop, tmp_path):
    opts = _opts(tmp_path, devices=(f"{loop.path}:/dev/fpga0",))
    cmd = "ls -ln /dev/fpga0 > /out/ls; head -c %d /dev/fpga0 > /out/first_bytes; id -G > /out/groups" % len(MARKER)
    result = run_in_sandbox(Docker(), busybox, ["sh", "-c", cmd], opts)
    assert result.exit_code == 0, result.container_log.read_text()
    assert (opts.out / "first_bytes").read_bytes() == MARKER
    gid = str(os.stat(loop.path).st_gid)
    assert gid in (opts.out / "groups").read_text().split() or gid == "0"
    nodes = json.loads((opts.out / "run.json").read_text())["sandbox"]["devices"]["nodes"]
    assert nodes == [{"host": loop.path, "container": "/dev/fpga0", "permissions": "rwm", "via": "node"}]


@pytest.mark.docker
def test_required_device_absent_fails_before_start(busybox, tmp_path, docker_client):
    before = len(docker_client.containers.list(all=True, filters={"label": "request-pack.run"}))
    declared = [Device(kind="fpga", nodes=["/dev/request-pack-no-such-fpga"])]
    with pytest.raises(DeviceMissing, match="request-pack-no-such-fpga") as e:
        run_in_sandbox(Docker(), busybox, ["true"], _opts(tmp_path), declared_devices=declared)
    assert e.value.return_code == 3
    assert len(docker_client.containers.list(all=True, filters={"label": "request-pack.run"})) == before
    assert not (tmp_path / "out").exists()


def _cdi_spec(directory: Path, node: str, vendor_class: str = "example.com/fpga") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "cdiVersion": "0.5.0",
        "kind": vendor_class,
        "devices": [{"name": "board0", "containerEdits": {
            "deviceNodes": [{"path": "/dev/fpga0", "hostPath": node}],
            "env": ["EXAMPLE_FPGA=board0"]}}],
    }
    path = directory / f"request-pack-test-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(spec))
    return path


CDI_PROBE = "head -c %d /dev/fpga0 > /out/first_bytes; echo $EXAMPLE_FPGA > /out/env" % len(MARKER)


@pytest.mark.docker
def test_cdi_name_resolved_for_docker(busybox, loop, tmp_path):
    """docker 20.10 has no CDI: the spec in a temporary CDI dir is resolved into --device by us."""
    spec = _cdi_spec(tmp_path / "cdi", loop.path)
    opts = _opts(tmp_path, devices=("example.com/fpga=board0",), cdi_dirs=(tmp_path / "cdi",))
    result = run_in_sandbox(Docker(), busybox, ["sh", "-c", CDI_PROBE], opts)
    assert result.exit_code == 0, result.container_log.read_text()
    assert (opts.out / "first_bytes").read_bytes() == MARKER
    assert (opts.out / "env").read_text().strip() == "board0"
    devices = json.loads((opts.out / "run.json").read_text())["sandbox"]["devices"]
    assert devices["cdi_resolved"] == [{"name": "example.com/fpga=board0", "spec": str(spec)}]


@pytest.mark.docker
def test_cdi_name_unknown_is_device_missing(busybox, tmp_path):
    _cdi_spec(tmp_path / "cdi", "/dev/null")
    opts = _opts(tmp_path, devices=("example.com/fpga=board9",), cdi_dirs=(tmp_path / "cdi",))
    with pytest.raises(DeviceMissing, match="board9"):
        run_in_sandbox(Docker(), busybox, ["true"], opts)


@pytest.fixture(scope="module")
def podman_busybox(tmp_path_factory) -> ImageRef:
    tar = tmp_path_factory.mktemp("pbb") / "busybox.tar"
    tar.write_bytes(busybox_tar())
    out = subprocess.run(["podman", "import", "--change", "ENTRYPOINT []", str(tar), f"{BUSYBOX_REPO}:latest"],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    image_id = out if out.startswith("sha256:") else "sha256:" + out
    yield ImageRef("busybox-test", Platform.native(), image_id)
    subprocess.run(["podman", "rmi", "-f", image_id], capture_output=True)


@pytest.mark.podman
def test_cdi_name_native_on_podman(podman_busybox, loop, tmp_path):
    """podman reads /var/run/cdi itself: the name goes to the engine unchanged."""
    spec = _cdi_spec(Path("/var/run/cdi"), loop.path)
    try:
        opts = _opts(tmp_path, devices=("example.com/fpga=board0",), cdi_dirs=(Path("/var/run/cdi"),))
        result = run_in_sandbox(Podman(), podman_busybox, ["sh", "-c", CDI_PROBE + "; id -u > /out/uid"], opts)
    finally:
        spec.unlink()
    assert result.exit_code == 0, result.container_log.read_text()
    assert (opts.out / "first_bytes").read_bytes() == MARKER
    assert (opts.out / "env").read_text().strip() == "board0"
    assert (opts.out / "uid").read_text().strip() == "1000"
    devices = json.loads((opts.out / "run.json").read_text())["sandbox"]["devices"]
    assert devices["cdi_native"] == ["example.com/fpga=board0"]


@pytest.mark.docker
def test_root_only_node_is_refused_before_start(busybox, loop, tmp_path):
    os.chmod(loop.path, 0o600)
    with pytest.raises(DeviceMissing, match="cannot open it"):
        run_in_sandbox(Docker(), busybox, ["true"], _opts(tmp_path, devices=(loop.path,)))
