"""scripts/setup.sh on this machine: a re-run changes nothing and is quick; what it configures really works."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _setup() -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "setup.sh")],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    return proc, time.monotonic() - start


@pytest.mark.docker
@pytest.mark.emulation
@pytest.mark.nix
def test_second_run_is_quick_and_changes_nothing():
    first, _ = _setup()
    assert first.returncode == 0, first.stdout + first.stderr
    again, seconds = _setup()
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"apt +all \d+ packages present", again.stdout), again.stdout
    assert "(up to date)" in again.stdout
    assert "starting dockerd" not in again.stdout and "wrote /etc/nix/nix.conf" not in again.stdout
    assert re.search(r"binfmt +enabled: qemu-aarch64\[\w*F\w*\] qemu-arm\[\w*F\w*\]", again.stdout), again.stdout
    assert seconds < 20, f"an idempotent re-run took {seconds:.1f} s"


def _nix_probe(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    # A fresh nonce makes a new derivation, so nix really builds instead of
    # answering from the store. The builder fails if it can see host paths.
    expr = tmp_path / f"probe-{uuid.uuid4().hex[:8]}.nix"
    host_paths = " ".join(["/usr", "/root", "/home", str(REPO_ROOT)])
    expr.write_text(
        'derivation { name = "request-pack-sandbox-probe"; system = builtins.currentSystem;'
        f' nonce = "{uuid.uuid4()}"; builder = "/bin/sh";'
        f' args = [ "-c" "for p in {host_paths}; do if [ -e $p ]; then echo leaked $p; exit 1; fi; done;'
        ' echo sandboxed > $out" ]; }\n'
    )
    return subprocess.run(
        ["nix-build", "--no-out-link", *options, str(expr)], capture_output=True, text=True, timeout=300,
    )


@pytest.mark.nix
def test_nix_builds_in_a_real_sandbox(tmp_path):
    proc = _nix_probe(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip().splitlines()[-1])
    assert out.read_text() == "sandboxed\n"
    # The probe can tell: without the sandbox the same builder sees the host.
    leaky = _nix_probe(tmp_path, "--option", "sandbox", "false", "--option", "sandbox-paths", "")
    assert leaky.returncode != 0 and "leaked /usr" in leaky.stderr, leaky.stderr
    shown = subprocess.run(["nix", "show-config"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^sandbox-fallback = false$", shown, re.M)
    assert re.search(r"^substituters = $", shown, re.M)
