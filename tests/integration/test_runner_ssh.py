"""A remote "board" over docker's ssh transport, played by an sshd of the test's own on 127.0.0.1.

The sshd has its own host key and config (127.0.0.1 only, key-only root login);
the ssh client gets its own config and known_hosts through a wrapper first on
PATH, because ssh reads ~/.ssh from the passwd entry, not $HOME, and the docker
SDK offers no way to pass ``-F``. The image reaches the remote engine the way it
would reach a board: exported from the OCI layout the build record names, then
``load``ed over ssh; the dataset goes into a volume with put_archive and the
outputs come back with get_archive. ``evaluate --target`` does the same with a
real artifact, from the build record to a verified bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_helpers import forget_image, free_port, import_busybox, unique_artifact  # noqa: F401 (a fixture)

from packager.engine import get_engine
from packager.platforms import Platform
from packager.run.runner import RunOptions, image_from_record, run_in_sandbox

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def ssh_target(tmp_path_factory):
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.fail("sshd is not installed (apt-get install -y openssh-server)", pytrace=False)
    d = tmp_path_factory.mktemp("ssh")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM no
""")
    (d / "ssh_config").write_text(f"""\
Host 127.0.0.1
  Port {port}
  User root
  IdentityFile {d}/client_key
  IdentitiesOnly yes
  UserKnownHostsFile {d}/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
  ControlMaster auto
  ControlPath {d}/cm-%C
  ControlPersist 60
""")
    bindir = d / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {d}/ssh_config \"$@\"\n")
    os.chmod(bindir / "ssh", 0o755)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "wb"))
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bindir}:{old_path}"
    try:
        yield f"ssh://root@127.0.0.1:{port}", d
    finally:
        os.environ["PATH"] = old_path
        subprocess.run([shutil.which("ssh"), "-F", str(d / "ssh_config"), "-O", "exit", "127.0.0.1"], capture_output=True)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def built_busybox(docker_client, tmp_path_factory):
    """A build dir as the builder leaves it: build-record.json naming the manifest in build/<name>/oci."""
    root = tmp_path_factory.mktemp("build-root")
    import_busybox(docker_client, root)
    layout = root / "build" / "busybox-test" / "oci"
    layout.parent.mkdir(parents=True)
    subprocess.run(["skopeo", "copy", "--quiet", "docker-daemon:request-pack-test/busybox:latest", f"oci:{layout}:amd64"], check=True)
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    record = {"index_digest": None, "platforms": {"linux/amd64": {"manifest_digest": manifest_digest}}}
    (layout.parent / "build-record.json").write_text(json.dumps(record))
    yield root / "build"
    for ref in ("request-pack-test/busybox:latest", "request-pack/busybox-test:linux-amd64"):
        try:
            docker_client.images.remove(ref, force=True)
        except Exception:
            pass  # already gone


def test_remote_run_loads_image_and_ships_data(ssh_target, built_busybox, docker_client, tmp_path):
    target, _ = ssh_target
    ref = image_from_record(tmp_path, "busybox-test", Platform.AMD64, built_busybox)
    # The "board" must get the image over ssh: make sure its engine does not have it yet.
    try:
        docker_client.images.remove(ref.config_digest, force=True)
    except Exception:
        pass
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.tsv").write_text("file\tclass_index\na.JPEG\t7\n")
    opts = RunOptions(stage="functional", dataset=data, out=tmp_path / "out", platform=Platform.AMD64)
    t0 = time.monotonic()
    engine = get_engine("docker", target)
    try:
        result = run_in_sandbox(engine, ref, ["sh", "-c", "cat /data/labels.tsv > /out/copy.tsv; id -u > /out/uid"], opts)
    finally:
        engine.close()
    wall = time.monotonic() - t0
    print(f"remote run over ssh (image load + data + run + fetch): {wall:.2f} s")
    assert result.exit_code == 0, result.container_log.read_text()
    assert (opts.out / "copy.tsv").read_text() == (data / "labels.tsv").read_text()
    assert (opts.out / "uid").read_text().strip() == "1000"
    run = json.loads((opts.out / "run.json").read_text())
    assert run["engine"]["host"] == target
    assert run["image"]["manifest_digest"] == ref.manifest_digest
    assert docker_client.api.inspect_image(ref.config_digest)["Id"] == ref.config_digest
    # The board keeps no volume of a finished run.
    key = hashlib.sha256(str(opts.out.resolve()).encode()).hexdigest()[:16]
    assert not {f"request-pack-data-{key}", f"request-pack-out-{key}"} & {v.name for v in docker_client.volumes.list()}


@pytest.mark.network
@pytest.mark.slow
def test_evaluate_over_ssh(ssh_target, unique_artifact, shared_sample, docker_client, tmp_path):
    import docker.errors

    target, _ = ssh_target
    art, record = unique_artifact
    config = record["platforms"]["linux/amd64"]["config_digest"]
    root = art.parent.parent
    forget_image(docker_client, config)  # the board must get the image over ssh
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(config)
    keys = tmp_path / "keys"
    cli = [sys.executable, "-m", "packager.cli"]
    assert subprocess.run([*cli, "keygen", "--out", str(keys)], cwd=root, capture_output=True).returncode == 0
    out = tmp_path / "results"
    t0 = time.monotonic()
    res = subprocess.run([*cli, "evaluate", str(art), "--target", target, "--stage", "functional", "--dataset", str(shared_sample),
                          "--out", str(out), "--key", str(keys / "signing.key")], cwd=root, capture_output=True, text=True)
    print(f"evaluate over ssh (image save/load + functional + sign + verify): {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "Traceback" not in res.stderr and "Broken pipe" not in res.stderr, res.stderr[-3000:]
    assert docker_client.images.get(config).id == config
    run = json.loads((out / "functional" / "run.json").read_text())
    assert run["engine"]["host"] == target and run["image"]["config_digest"] == config
    metrics = json.loads((out / "functional" / "metrics.json").read_text())
    assert metrics["accuracy"]["samples"] == 20 and metrics["accuracy"]["top1"] >= 0.5
    system = json.loads((out / "functional" / "system.json").read_text())
    assert system["sandbox"]["network"] == "none" and system["sandbox"]["engine"]["host"] == target
    bundle = out / f"{art.name}-linux-amd64-functional.bundle.tar.gz"
    ok = subprocess.run([*cli, "verify", str(bundle), "--trust", str(keys / "signing.pub"), "--dataset", str(shared_sample)],
                        cwd=root, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
