"""Services the integration tests share; each starts for real and stops after the module that used it."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from runner_helpers import free_port


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real OCI registry (Debian's docker-registry, distribution 2.8) on a free 127.0.0.1 port: ``host:port``."""
    exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(exe).exists():
        pytest.fail("docker-registry is not installed (apt-get install -y docker-registry)", pytrace=False)
    d = tmp_path_factory.mktemp("registry")
    port = free_port()
    (d / "config.yml").write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                                  f"    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
                                  f"  secret: request-pack-test\n")
    with open(d / "log", "wb") as log:
        proc = subprocess.Popen([exe, "serve", str(d / "config.yml")], stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"docker-registry exited: {(d / 'log').read_text()[-500:]}", pytrace=False)
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# A one-layer ONNX model made on the spot: runner tests that need a model but not ImageNet weights.
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from packager.harness import tinynet

    d = tmp_path_factory.mktemp("model")
    d.chmod(0o755)  # the sandbox user (uid 1000) reads it through a bind mount
    model = tinynet.build(d / "tiny.onnx")
    model.chmod(0o644)
    return model
