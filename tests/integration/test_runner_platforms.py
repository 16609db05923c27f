"""Non-native platforms under QEMU: the runner loads each platform's image from the build's
OCI layout by digest, runs it in the sandbox, and the process inside reports its machine.

The image is the build fixture ``tests/data/build-small`` (Debian python3 + numpy on all
three platforms), built by ``packager.build`` from the machine's cache. The slowdown of a
small pure-Python and numpy workload against amd64 is printed (pytest -s shows it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.engine.docker import Docker
from packager.platforms import Platform
from packager.run.runner import RunOptions, image_from_record, run_in_sandbox

pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.slow]

ARTIFACT = Path(__file__).resolve().parents[1] / "data" / "build-small"
PROBE = """
import json, platform, time
import numpy as np
t = time.perf_counter(); s = 0
for i in range(300000):
    s += i * i
py = time.perf_counter() - t
a = np.arange(160 * 160, dtype=np.float64).reshape(160, 160) / 1e4
t = time.perf_counter(); b = a @ a; mm = time.perf_counter() - t
json.dump({"machine": platform.machine(), "python_s": py, "matmul_s": mm}, open("/out/probe.json", "w"))
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    # locked now against the live mirror, as the build tests do: the committed fixture lock pins .debs a
    # fresh machine's cache does not have (and the mirror may have replaced since it was written)
    from build_helpers import locked_copy

    return locked_copy(tmp_path_factory.mktemp("art"))


@pytest.fixture(scope="module")
def build_root(artifact, tmp_path_factory) -> Path:
    from packager.image import build as builder

    root = tmp_path_factory.mktemp("build")
    builder.build(artifact, builder.BuildOptions(platforms=tuple(Platform), build_root=root))
    return root


def test_each_platform_runs_and_reports_its_machine(artifact, build_root, tmp_path):
    engine = Docker()
    data = tmp_path / "data"
    data.mkdir()
    seen: dict[Platform, dict] = {}
    for plat in Platform:
        ref = image_from_record(artifact, "build-small", plat, build_root)
        opts = RunOptions(stage="functional", dataset=data, out=tmp_path / plat.slug, platform=plat)
        result = run_in_sandbox(engine, ref, ["-c", PROBE], opts, entrypoint=["python3"])
        assert result.exit_code == 0, result.container_log.read_text()
        probe = json.loads((opts.out / "probe.json").read_text())
        assert probe["machine"] == plat.uname_machine
        run = json.loads((opts.out / "run.json").read_text())
        assert run["image"]["config_digest"] == ref.config_digest and run["platform"] == plat.value
        probe["wall_s"] = result.wall_s
        seen[plat] = probe
    base = seen[Platform.AMD64]
    for plat, p in seen.items():
        print(f"{plat.value:13} {p['machine']:8} python x{p['python_s'] / base['python_s']:5.1f}  "
              f"matmul x{p['matmul_s'] / max(base['matmul_s'], 1e-6):6.1f}  run wall {p['wall_s']:.1f} s")


def test_a_crash_under_emulation_ends_the_run(artifact, build_root, tmp_path):
    """QEMU re-raises the guest's SIGSEGV at itself; as PID 1 without an init it would hang for ever."""
    import concurrent.futures

    engine = Docker()
    data = tmp_path / "data"
    data.mkdir()
    ref = image_from_record(artifact, "build-small", Platform.ARM64, build_root)
    opts = RunOptions(stage="functional", dataset=data, out=tmp_path / "crash", platform=Platform.ARM64)
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_in_sandbox, engine, ref, ["-c", crash], opts, entrypoint=["python3"])
        try:
            result = future.result(timeout=120)
        except concurrent.futures.TimeoutError:
            for c in engine.client.containers.list(filters={"ancestor": ref.config_digest}):
                c.remove(force=True)  # so the worker returns and the failure below is reported
            pytest.fail("the crashed emulated process hung its container (no init as PID 1?)")
    assert result.exit_code == 139, result.container_log.read_text()
    assert json.loads((opts.out / "run.json").read_text())["sandbox"]["init"] is True
