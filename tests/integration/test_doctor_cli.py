"""The real `request-pack doctor` on this machine, cross-checked against the things it reports on."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.platforms import Platform

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli() -> list[str]:
    # Prefer the console script of the interpreter running the tests (the venv's).
    script = Path(sys.executable).with_name("request-pack")
    if script.exists():
        return [str(script)]
    found = shutil.which("request-pack")
    assert found, "request-pack is not installed; run make setup"
    return [found]


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cli() + ["doctor", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def report() -> dict:
    proc = doctor("--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_document_describes_this_host(report):
    assert report["schema_version"] == 1
    names = [c["name"] for c in report["checks"]]
    assert len(names) == len(set(names))
    for expected in ["docker", "podman", "buildah", "mmdebstrap", "skopeo", "nix", "nvidia-smi", "/dev/xdevcfg", "cores", "memory", "cache disk"]:
        assert expected in names
    for plat in Platform:
        assert f"emulation {plat.value}" in names
    native = [c for c in report["checks"] if c["name"] == f"emulation {Platform.native().value}"]
    assert native[0]["detail"] == "native"
    assert report["host"]["native_platform"] == Platform.native().value
    assert report["host"]["cores"] == len(os.sched_getaffinity(0))
    assert report["host"]["memory_bytes"] > 0
    for check in report["checks"]:
        if check["status"] != "ok":
            assert check["fix"], f"{check['name']} is {check['status']} and names no fix"
    # Capabilities are derived from the checks, never reported on their own.
    by_cap: dict[str, list[str]] = {}
    for check in report["checks"]:
        by_cap.setdefault(check["capability"], []).append(check["status"])
    for cap, statuses in by_cap.items():
        want = "ok" in statuses if cap in ("gpu", "fpga") else all(s == "ok" for s in statuses)
        assert report["capabilities"][cap] is want, cap


def test_json_output_is_stable_between_runs(report):
    again = json.loads(doctor("--json").stdout)
    strip = lambda doc: [(c["name"], c["status"]) for c in doc["checks"]]  # noqa: E731
    assert strip(again) == strip(report)
    assert list(again["capabilities"]) == list(report["capabilities"])


def test_table_output_and_exit_code():
    proc = doctor()
    assert proc.returncode == 0, proc.stderr
    assert "request-pack doctor" in proc.stdout
    assert "emulation linux/arm64" in proc.stdout


def test_gpu_report_matches_the_device_nodes(report):
    has_nodes = bool(glob.glob("/dev/nvidia*") or glob.glob("/dev/dri/*"))
    gpu = {c["name"]: c for c in report["checks"] if c["capability"] == "gpu"}
    assert (gpu["/dev/nvidia*"]["status"] == "ok") is bool(glob.glob("/dev/nvidia*"))
    assert (gpu["/dev/dri"]["status"] == "ok") is bool(glob.glob("/dev/dri/*"))
    proc = doctor("--json", "--require", "gpu")
    if report["capabilities"]["gpu"]:
        assert proc.returncode == 0
    else:
        assert not has_nodes
        assert proc.returncode == 3, proc.stderr
        assert "missing gpu" in proc.stderr and "nvidia-ctk cdi generate" in proc.stderr


def test_unknown_requirement_is_bad_input():
    proc = doctor("--require", "docker,warp-drive")
    assert proc.returncode == 2
    assert "warp-drive" in proc.stderr


@pytest.mark.docker
def test_docker_reported_reachable_with_the_server_version(docker_client):
    proc = doctor("--json", "--require", "docker")
    assert proc.returncode == 0, proc.stderr
    check = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "docker")
    assert docker_client.version()["Version"] in check["detail"]


@pytest.mark.podman
def test_podman_and_buildah_reported():
    proc = doctor("--json", "--require", "podman,buildah")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.nix
def test_nix_sandboxed():
    proc = doctor("--json", "--require", "nix")
    assert proc.returncode == 0, proc.stderr
    check = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "nix")
    assert "sandbox true" in check["detail"]


@pytest.mark.emulation
def test_emulated_platforms_really_run_foreign_binaries():
    proc = doctor("--json", "--require", "emulation")
    assert proc.returncode == 0, proc.stderr
    # Registered is not the same as working: arch-test runs a tiny static
    # binary of each architecture through the kernel's binfmt handler.
    assert shutil.which("arch-test"), "arch-test missing (make setup)"
    for plat in Platform:
        if plat is Platform.native():
            continue
        out = subprocess.run(["arch-test", plat.debian_arch], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == f"{plat.debian_arch}: ok", out.stdout + out.stderr
