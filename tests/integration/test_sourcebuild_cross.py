"""LoadGen's wheels for arm64 and armv7, cross-built from the pinned sdist, run for real under QEMU.

For each platform the committed lock of an example artifact pins the wheel
(sdist, build inputs, toolchain, wheel sha256). The test fetches the inputs,
then ``sourcebuild.ensure`` reuses the wheel from the cache or cross-builds it
(about a minute per arch) and checks it has the locked bytes. The wheel then
runs inside a container made from that artifact's own base root filesystem
(Debian's python3 for the target, emulated): ``import mlperf_loadgen`` and a
short SingleStream test against a SUT that sleeps 2 ms per query, which must
leave LoadGen's summary and detail logs with a VALID result and a 90th
percentile no lower than those 2 ms.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from packager.cache import Cache
from packager.image.plan import deb_epoch, debs_of
from packager.image.rootfs import build_rootfs
from packager.inputs import sourcebuild
from packager.inputs.lockfile import load_lock
from packager.manifest import load_manifest
from packager.platforms import Platform

pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CASES = {
    Platform.ARM64: REPO / "artifacts" / "efficientnet-lite0",
    Platform.ARMV7: REPO / "artifacts" / "efficientnet-lite0",
}

SINGLE_STREAM = r"""
import json, os, platform, time
import mlperf_loadgen as lg

def issue(queries):
    time.sleep(0.002)  # a SUT with a known latency floor: LoadGen's percentiles must not be below it
    lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in queries])

sut = lg.ConstructSUT(issue, lambda: None)
qsl = lg.ConstructQSL(8, 8, lambda idx: None, lambda idx: None)
settings = lg.TestSettings()
settings.scenario = lg.TestScenario.SingleStream
settings.mode = lg.TestMode.PerformanceOnly
settings.single_stream_expected_latency_ns = 1500000
settings.min_query_count = 64
settings.min_duration_ms = 250
out = "/tmp/loadgen"
os.makedirs(out)
lo = lg.LogOutputSettings()
lo.outdir = out
lo.copy_summary_to_stdout = False
ls = lg.LogSettings()
ls.log_output = lo
lg.StartTestWithLogSettings(sut, qsl, settings, ls)
lg.DestroyQSL(qsl)
lg.DestroySUT(sut)
summary = open(os.path.join(out, "mlperf_log_summary.txt")).read()
print(json.dumps({"machine": platform.machine(), "module": lg.__file__, "logs": sorted(os.listdir(out)), "summary": summary}))
"""


def _docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_API_VERSION": os.environ.get("DOCKER_API_VERSION", "1.41")}
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"docker {' '.join(args[:3])}: {proc.stderr[-2000:]}"
    return proc


def _base_image(platform: Platform, artifact: Path, cache: Cache) -> str:
    """The artifact's base root filesystem as a docker image (cached rootfs; imported once per rootfs hash)."""
    lock = load_lock(artifact / "request.lock")
    debs = debs_of(lock, platform)
    for d in debs:
        cache.fetch_url(next(x.url for x in lock.platforms[platform.value].debian.packages if x.sha256 == d.sha256),
                        d.sha256, name=d.filename, size=d.size)
    epoch = deb_epoch([cache.path_of(d.sha256) for d in debs])
    rootfs = build_rootfs(platform, debs, cache, epoch)
    tag = f"request-pack-test/base-{platform.slug}:{rootfs.sha256[:16]}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        # docker import records the daemon's architecture whatever --platform says (API 1.41), so the
        # run below names no platform either: binfmt's QEMU runs the foreign binaries, and the test
        # checks the machine the interpreter reports.
        _docker("import", str(rootfs.path), tag)
    return tag


@pytest.mark.parametrize("platform", list(CASES), ids=lambda p: p.slug)
def test_cross_built_loadgen_imports_and_runs_single_stream_under_qemu(platform: Platform, tmp_path: Path) -> None:
    cache = Cache.open()
    lock = load_lock(CASES[platform] / "request.lock")
    entry = next(w for w in lock.platforms[platform.value].wheels if w.name == "mlcommons-loadgen")
    assert entry.build is not None and entry.url is None, "the lock should pin a wheel built from the sdist here"
    for f in entry.build.inputs():
        cache.fetch_url(f.url, f.sha256, name=f.filename, size=f.size)

    started = time.monotonic()
    system = load_manifest(CASES[platform]).base_system
    built = sourcebuild.ensure(cache, entry.build, system, name=entry.name, version=entry.version, expected_sha256=entry.sha256)
    build_s = time.monotonic() - started
    assert built.sha256 == entry.sha256
    # the index maps the recipe's key to the wheel, so a re-lock reuses it without compiling
    again = sourcebuild.build_wheel(cache, entry.build, system, name=entry.name, version=entry.version)
    assert again.cached and again.sha256 == entry.sha256

    site = tmp_path / "site"
    with zipfile.ZipFile(cache.path_of(entry.sha256, verify=True, name=entry.filename)) as zf:
        zf.extractall(site)
    image = _base_image(platform, CASES[platform], cache)
    started = time.monotonic()
    proc = _docker("run", "--rm", "--network", "none",
                   "-v", f"{site}:/opt/loadgen:ro", "-e", "PYTHONPATH=/opt/loadgen",
                   image, "python3", "-c", SINGLE_STREAM)
    run_s = time.monotonic() - started
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["machine"] == platform.uname_machine
    assert report["module"].startswith("/opt/loadgen/mlperf_loadgen.cpython-311-")
    assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"} <= set(report["logs"])
    summary = report["summary"]
    assert "Scenario : SingleStream" in summary and "Result is : VALID" in summary, summary[:800]
    p90_ns = int(re.search(r"90.0th percentile latency \(ns\) : (\d+)", summary).group(1))
    assert 2_000_000 <= p90_ns < 1_000_000_000, summary[:800]
    print(f"\n{platform}: wheel {'reused' if built.cached else f'cross-built in {build_s:.0f} s'}; "
          f"SingleStream under QEMU in {run_s:.0f} s")
