"""The one place that decides whether a marked test can run here.

A test marked ``docker``, ``podman``, ``emulation``, ``nix``, ``network``,
``browser``, ``database``, ``slurm``, ``gpu`` or ``fpga`` runs only when the capability is
really present. When it is absent:

* ``gpu`` / ``fpga`` tests skip with the reason (no such hardware is normal);
* every other marker skips on a developer's machine, but FAILS with the reason
  under ``make test`` (``REQUEST_PACK_REQUIRE_ALL=1``) and in CI (``CI=true``),
  so a broken set-up can never pass as "all skipped".

Capabilities are probed lazily (only when a marked test is about to run) and
once per session, with the same probes as ``request-pack doctor``. Nothing here
talks to a daemon at import time, so unit tests need none.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OPTIONAL_HARDWARE = frozenset({"gpu", "fpga"})


def require_all() -> bool:
    flag = os.environ.get("REQUEST_PACK_REQUIRE_ALL", "").lower() in ("1", "true", "yes")
    return flag or os.environ.get("CI", "").lower() == "true"


def _failed(checks) -> str | None:
    bad = [c for c in checks if not c.ok]
    if not bad:
        return None
    fixes = sorted({c.fix for c in bad if c.fix})
    return "; ".join(f"{c.name}: {c.detail}" for c in bad) + (f" (fix: {'; '.join(fixes)})" if fixes else "")


def _probe_docker() -> str | None:
    from packager import doctor

    return _failed([doctor.check_docker()])


def _probe_podman() -> str | None:
    from packager import doctor

    return _failed([doctor.check_podman(), doctor.check_buildah()])


def _probe_emulation() -> str | None:
    from packager import doctor

    return _failed(doctor.check_emulation())


def _probe_nix() -> str | None:
    from packager import doctor

    return _failed([doctor.check_nix()])


def _probe_gpu() -> str | None:
    from packager import doctor

    checks = doctor.check_gpus()
    return None if any(c.ok for c in checks) else "no GPU: no nvidia-smi, /dev/nvidia*, CDI spec or /dev/dri"


def _probe_fpga() -> str | None:
    from packager import doctor

    checks = doctor.check_fpgas()
    return None if any(c.ok for c in checks) else "no FPGA: no /dev/xdevcfg, /dev/xclmgmt*, fpga_manager or /dev/uio*"


def _probe_network() -> str | None:
    for host, port in (("deb.debian.org", 80), ("pypi.org", 443)):
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as e:
            return f"cannot reach {host}:{port}: {e}"
    return None


def _probe_browser() -> str | None:
    names = ("chromium", "chromium-headless-shell", "google-chrome")
    return None if any(shutil.which(n) for n in names) else f"none of {', '.join(names)} on PATH (fix: make setup)"


def _probe_database() -> str | None:
    found = shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")
    return None if found else "PostgreSQL server binaries (initdb) not installed (fix: make setup)"


def _probe_slurm() -> str | None:
    # The tests start their own munged, slurmctld and slurmd (packager/farm/localslurm.py).
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol") if not shutil.which(t)]
    return f"{', '.join(missing)} not installed (fix: apt-get install -y slurm-wlm munge; make setup)" if missing else None


PROBES = {
    "slurm": _probe_slurm,
    "docker": _probe_docker,
    "podman": _probe_podman,
    "emulation": _probe_emulation,
    "nix": _probe_nix,
    "network": _probe_network,
    "browser": _probe_browser,
    "database": _probe_database,
    "gpu": _probe_gpu,
    "fpga": _probe_fpga,
}


@functools.cache
def missing(capability: str) -> str | None:
    """Why ``capability`` is unavailable here, or None when it is available. Cached per session."""
    return PROBES[capability]()


def pytest_report_header(config) -> str:
    mode = "required (missing -> fail)" if require_all() else "optional (missing -> skip)"
    return f"request-pack capabilities: {mode}; gpu/fpga always optional"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in dict.fromkeys(m.name for m in item.iter_markers()):
        if name not in PROBES:
            continue
        reason = missing(name)
        if reason is None:
            continue
        if name in OPTIONAL_HARDWARE or not require_all():
            pytest.skip(f"{name} unavailable: {reason}")
        pytest.fail(f"{name} required (CI / make test) but unavailable: {reason}", pytrace=False)


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("request-pack-cache")


@pytest.fixture
def cache_dir(_session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-session cache directory, exported as REQUEST_PACK_CACHE for the test."""
    monkeypatch.setenv("REQUEST_PACK_CACHE", str(_session_cache))
    return _session_cache


@pytest.fixture(scope="session")
def shared_sample() -> Path:
    """The shared ImageNet sample: ``<repo>/../shared/data/imagenet-sample``, else $REQUEST_PACK_SAMPLE."""
    candidates = [REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"]
    if os.environ.get("REQUEST_PACK_SAMPLE"):
        candidates.append(Path(os.environ["REQUEST_PACK_SAMPLE"]))
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    reason = f"ImageNet sample not found in {', '.join(map(str, candidates))} (set REQUEST_PACK_SAMPLE)"
    if require_all():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client at the project's API version; use with ``@pytest.mark.docker``."""
    import docker

    reason = missing("docker")
    if reason is not None:
        if require_all():
            pytest.fail(f"docker required but unavailable: {reason}", pytrace=False)
        pytest.skip(f"docker unavailable: {reason}")
    client = docker.DockerClient(
        base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        version=os.environ.get("DOCKER_API_VERSION", "1.41"),
        timeout=300,
    )
    yield client
    client.close()
