"""The armv7 example artifact, for real: its image built from the committed lock runs the
harness (reference numpy backend, Debian's numpy and onnx) under QEMU and classifies real
sample images. Three images only: the reference backend takes seconds per image emulated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.slow, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "artifacts" / "efficientnet-lite0-armv7"
CLI = [sys.executable, "-m", "packager.cli"]


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_API_VERSION": "1.41"}
    result = subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"request-pack {' '.join(args)}: {result.returncode}\n{result.stderr[-3000:]}"
    return result


def test_armv7_artifact_functional_stage_under_qemu(tmp_path: Path, shared_sample: Path) -> None:
    build_root = tmp_path / "build"
    # fetch fills the cache from the committed lock (the model comes from its recipe);
    # --frozen then proves the build will need nothing from the network.
    _cli("fetch", str(ARTIFACT))
    _cli("lock", "--frozen", str(ARTIFACT))
    _cli("build", str(ARTIFACT), "--out", str(build_root))
    out = tmp_path / "out"
    started = time.monotonic()
    _cli("run", str(ARTIFACT), "--stage", "functional", "--dataset", str(shared_sample), "--out", str(out),
         "--platform", "linux/arm/v7", "--samples", "3", "--build-root", str(build_root))
    elapsed = time.monotonic() - started

    metrics = json.loads((out / "metrics.json").read_text())
    system = json.loads((out / "system.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert system["machine"] == "armv7l"
    assert metrics["platform"] == "linux/arm/v7" and metrics["framework"].startswith("reference")
    assert len(predictions) == 3 and metrics["accuracy"]["samples"] == 3
    # The real EfficientNet-Lite0 gets these three sample images right (it scores 178/200 on amd64).
    assert metrics["accuracy"]["correct_top5"] == 3, metrics["accuracy"]
    # LoadGen drives the scenarios in the image too (its armv7 wheel is cross-built from the sdist).
    assert metrics["driver"] == "mlperf-loadgen 6.0.17", metrics["driver"]
    logs = {Path(p).name for p in metrics["loadgen_logs"]}
    assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"} <= logs, logs
    assert all((out / p).is_file() for p in metrics["loadgen_logs"]), metrics["loadgen_logs"]
    print(f"\narmv7 functional stage, 3 images under QEMU: {elapsed:.0f} s; "
          f"SingleStream p50 {metrics['latency']['p50_s'] * 1e3:.0f} ms (emulated)")
