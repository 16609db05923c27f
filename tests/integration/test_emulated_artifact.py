"""Example artifacts, for real, under QEMU: their images built from the committed locks run the
harness on the non-native platforms and classify real sample images, and each test prints the
wall time and the per-image latency against the same model on amd64, measured in the same run.

- linux/arm64: efficientnet-lite0 (onnxruntime 1.32 manylinux aarch64 wheel), against the
  same artifact's amd64 image. It needs QEMU >= 8.2 (scripts/setup.sh installs 10.0 from
  bookworm-backports): bookworm's 7.2 hands the guest the host's x86 /proc/cpuinfo and
  onnxruntime's cpuinfo library segfaults on import (qemu/README.md).
- linux/arm/v7: efficientnet-lite0 (reference numpy backend, Debian's numpy and onnx),
  against the same backend, model and images run natively by the harness in the project's venv.

Three images each: the emulated runs take seconds per image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packager.cache import Cache
from packager.manifest import load_manifest

pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.slow, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
# one artifact: onnxruntime on amd64/arm64, the reference executor on arm/v7 (one index)
ARMV7 = ORT = REPO / "artifacts" / "efficientnet-lite0"
CLI = [sys.executable, "-m", "packager.cli"]
SAMPLES = 3
# What the runner caps an emulated functional stage of SAMPLES images to (runner.harness_argv);
# the native baseline of the armv7 test runs the same scenario sizes.
EMULATED_SIZES = [f"--queries={SAMPLES}", f"--offline-samples={SAMPLES}", "--warmup=2"]


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_API_VERSION": "1.41"}
    result = subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"request-pack {' '.join(args)}: {result.returncode}\n{result.stderr[-3000:]}"
    return result


def _build(artifact: Path, build_root: Path) -> None:
    # fetch fills the cache from the committed lock (the model comes from its recipe);
    # --frozen then proves the build will need nothing from the network.
    _cli("fetch", str(artifact))
    _cli("lock", "--frozen", str(artifact))
    _cli("build", str(artifact), "--out", str(build_root))  # every platform of the manifest


def _run(artifact: Path, build_root: Path, dataset: Path, out: Path, platform: str,
         *extra: str) -> tuple[float, dict, dict, list]:
    started = time.monotonic()
    _cli("run", str(artifact), "--stage", "functional", "--dataset", str(dataset), "--out", str(out),
         "--platform", platform, "--samples", str(SAMPLES), "--build-root", str(build_root), *extra)
    return time.monotonic() - started, *_outputs(out)


def _outputs(out: Path) -> tuple[dict, dict, list]:
    metrics = json.loads((out / "metrics.json").read_text())
    system = json.loads((out / "system.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return metrics, system, predictions


def _report(name: str, runs: dict[str, tuple[float, dict]]) -> str:
    """One line per platform: wall time, SingleStream p50 per image, slowdown against amd64."""
    base = runs["linux/amd64"][1]["latency"]["p50_s"]
    lines = [f"\n{name}, functional stage, {SAMPLES} images, SingleStream p50 per image:"]
    for platform, (wall, metrics) in runs.items():
        if metrics["latency"] is None:  # an emulated run measures no performance unless asked to
            lines.append(f"  {platform:13} wall {wall:6.1f} s   (QEMU; performance skipped: {metrics['performance_skipped']})")
            continue
        p50 = metrics["latency"]["p50_s"]
        how = "native" if platform == "linux/amd64" else f"QEMU, {p50 / base:.0f}x amd64"
        lines.append(f"  {platform:13} wall {wall:6.1f} s   p50 {p50 * 1e3:9.1f} ms   ({how})")
    return "\n".join(lines)


def _same_answers(emulated: list, native: list) -> None:
    """The emulated CPU computes what the host computes: same classes, probabilities within fp32 noise."""
    assert [p["id"] for p in emulated] == [p["id"] for p in native]
    for e, n in zip(emulated, native):
        assert e["top5"][0] == n["top5"][0], (e, n)
        assert e["probs"][0] == pytest.approx(n["probs"][0], abs=1e-3), (e, n)


def test_arm64_onnxruntime_artifact_functional_stage_under_qemu(tmp_path: Path, shared_sample: Path) -> None:
    build_root = tmp_path / "build"
    _build(ORT, build_root)
    amd64_wall, amd64, _, amd64_predictions = _run(ORT, build_root, shared_sample, tmp_path / "amd64", "linux/amd64")
    wall, metrics, system, predictions = _run(ORT, build_root, shared_sample, tmp_path / "arm64", "linux/arm64")

    assert system["machine"] == "aarch64"
    assert metrics["platform"] == "linux/arm64" and metrics["framework"].startswith("onnxruntime")
    # By default an emulated run does the accuracy pass and the equivalence check only: its latency
    # would measure QEMU (about 630x slower for onnxruntime), not an arm64 board.
    assert metrics["latency"] is None and metrics["throughput"] == [] and metrics["performance_skipped"]
    assert metrics["measurement"]["execution"] == "emulated"
    assert len(predictions) == SAMPLES and metrics["accuracy"]["samples"] == SAMPLES
    # The real EfficientNet-Lite0 gets these sample images right (16/20 top-1 on the first 20).
    assert metrics["accuracy"]["correct_top5"] == SAMPLES, metrics["accuracy"]
    _same_answers(predictions, amd64_predictions)
    print(_report("efficientnet-lite0 (onnxruntime on arm64)",
                  {"linux/amd64": (amd64_wall, amd64), "linux/arm64": (wall, metrics)}))


def test_armv7_artifact_functional_stage_under_qemu(tmp_path: Path, shared_sample: Path) -> None:
    build_root = tmp_path / "build"
    _build(ARMV7, build_root)
    out = tmp_path / "out"
    # --emulated-performance: this test keeps measuring the QEMU slowdown (qemu/README's figures)
    elapsed, metrics, system, predictions = _run(ARMV7, build_root, shared_sample, out, "linux/arm/v7",
                                                 "--emulated-performance")

    assert system["machine"] == "armv7l"
    assert metrics["platform"] == "linux/arm/v7" and metrics["framework"].startswith("reference")
    # the platform's view: runs.linux/arm/v7 (batches [1, 4], warm-up 2) in run, the shared run: ([1, 32]) not
    view = json.loads((out / "run-config.json").read_text())
    assert (view["run"]["batch_sizes"], view["run"]["warmup"], view["framework"]["name"]) == ([1, 4], 2, "reference")
    assert "runs" not in view and "frameworks" not in view
    assert len(predictions) == SAMPLES and metrics["accuracy"]["samples"] == SAMPLES
    # The real EfficientNet-Lite0 gets these three sample images right (it scores 178/200 on amd64).
    assert metrics["accuracy"]["correct_top5"] == SAMPLES, metrics["accuracy"]
    # LoadGen drives the scenarios in the image too (its armv7 wheel is cross-built from the sdist).
    assert metrics["driver"] == "mlperf-loadgen 6.0.17", metrics["driver"]
    logs = {Path(p).name for p in metrics["loadgen_logs"]}
    assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"} <= logs, logs
    assert all((out / p).is_file() for p in metrics["loadgen_logs"]), metrics["loadgen_logs"]

    # The armv7 image runs the reference executor; its amd64 baseline is the same harness,
    # reference backend, model file, images and scenario sizes, run natively from the venv.
    manifest = load_manifest(ARMV7 / "request.yaml")
    model = Cache.open().path_of(manifest.model.sha256)
    native = tmp_path / "native"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "packager.harness", "--config", str(out / "run-config.json"),
                    "--model", str(model), "--dataset", str(shared_sample), "--out", str(native),
                    "--cache", str(tmp_path / "cache"), "--backend", "reference", "--stage", "functional",
                    "--samples", str(SAMPLES), "--platform", "linux/amd64", *EMULATED_SIZES],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    native_wall = time.monotonic() - started
    native_metrics, _, native_predictions = _outputs(native)
    assert native_metrics["framework"].startswith("reference")
    _same_answers(predictions, native_predictions)
    print(_report("efficientnet-lite0 (reference numpy backend on arm/v7)",
                  {"linux/amd64": (native_wall, native_metrics), "linux/arm/v7": (elapsed, metrics)}))
