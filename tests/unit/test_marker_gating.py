"""tests/conftest.py: a missing capability skips on a laptop but fails under make test / CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

CASES = '''
import pytest

@pytest.mark.docker
def test_needs_docker():
    pass

@pytest.mark.gpu
def test_needs_gpu():
    pass

def test_plain():
    pass
'''


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    docker: d\n    gpu: g\n")
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "REQUEST_PACK_REQUIRE_ALL")}
    # Nothing listens on this socket, so the real docker probe fails, as it
    # would with the daemon down.
    base["DOCKER_HOST"] = f"unix://{tmp_path}/no-daemon.sock"
    base["PYTHONPATH"] = str(TESTS.parent)
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rsfE", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=base, timeout=120,
    )


def test_missing_docker_skips_on_a_developer_machine(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed" in proc.stdout
    assert "SKIPPED" in proc.stdout and "docker unavailable: docker: docker at the local daemon does not answer" in proc.stdout
    assert "fix: make setup" in proc.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {"REQUEST_PACK_REQUIRE_ALL": "1"}])
def test_missing_docker_fails_in_ci_and_make_test(tmp_path, env):
    proc = _run(tmp_path, **env)
    assert proc.returncode == 1, proc.stdout
    assert "docker required (CI / make test) but unavailable" in proc.stdout
    assert "1 passed" in proc.stdout and "1 error" in proc.stdout


def test_gpu_absence_only_ever_skips(tmp_path):
    if any(Path("/dev").glob("nvidia*")) or Path("/dev/dri").exists() or shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU device, so the gpu test runs instead of skipping")
    proc = _run(tmp_path, CI="true")
    assert "SKIPPED" in proc.stdout and "gpu unavailable: no GPU" in proc.stdout
