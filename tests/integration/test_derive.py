"""A derived artifact, for real: `request-pack derive` writes a few lines, locks them from the parent's
lock, and the result builds (cached base layers) and classifies sample images in its own image.

efficientnet-lite0 with model.precision=int8 on linux/amd64: the model layer is the int8 file (its
sha256 pinned by the model component's int8 variant), the framework onnxruntime, the base and wheels
layers the parent's. The functional stage runs on the first images of the shared 200-image sample
(not the ILSVRC2012 validation set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "packager.cli"]
SAMPLES = 5


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_API_VERSION": "1.41", "COLUMNS": "200"}
    result = subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"request-pack {' '.join(args)}: {result.returncode}\n{result.stderr[-3000:]}"
    return result


def test_derived_int8_artifact_builds_and_classifies(tmp_path: Path, shared_sample: Path) -> None:
    parent = tmp_path / "artifacts" / "efficientnet-lite0"  # a copy: components come from the checkout
    shutil.copytree(REPO / "artifacts" / parent.name, parent, ignore=shutil.ignore_patterns("image.json"))
    # run.knobs.threads: the knob every run of the platform starts from, in the image's request.json
    _cli("derive", str(parent), "--set", "model.precision=int8", "--set", "platforms=[linux/amd64]",
         "--set", "run.knobs.threads=1", "--name", "lite0-int8")
    child = parent.parent / "lite0-int8"
    text = (child / "request.yaml").read_text()
    assert len(text.splitlines()) < 12 and "parent: ../efficientnet-lite0" in text
    lock, parent_lock = (json.loads((d / "request.lock").read_text()) for d in (child, parent))
    assert lock["platforms"]["linux/amd64"] == parent_lock["platforms"]["linux/amd64"]  # reused, not resolved again
    shown = yaml.safe_load(_cli("show", str(child)).stdout)
    assert lock["model"]["sha256"] == shown["model"]["sha256"] != parent_lock["model"]["sha256"]
    assert "runs" not in shown and shown["run"]["knobs"] == {"threads": 1}  # arm/v7's entry went with arm/v7

    build = tmp_path / "build"
    _cli("lock", "--frozen", str(child))
    _cli("build", str(child), "--out", str(build))
    out = tmp_path / "out"
    _cli("run", str(child), "--stage", "functional", "--dataset", str(shared_sample), "--out", str(out),
         "--platform", "linux/amd64", "--samples", str(SAMPLES), "--build-root", str(build))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["platform"] == "linux/amd64" and metrics["framework"].startswith("onnxruntime 1.32.0")
    assert metrics["accuracy"]["samples"] == SAMPLES
    # the int8 EfficientNet-Lite0 is a real classifier: far above chance (0.1%) on sample images
    assert metrics["accuracy"]["correct_top5"] >= SAMPLES - 1, metrics["accuracy"]
    run_config = json.loads((out / "run-config.json").read_text())
    assert run_config["model"]["precision"] == "int8" and run_config["framework"]["name"] == "onnxruntime"
    # the manifest's knob reached the harness as the run config, was applied and recorded (what a bundle signs)
    command = json.loads((out / "run.json").read_text())["command"]
    assert json.loads(command[command.index("--run-config") + 1]) == {"threads": 1} == metrics["run_config"]
    assert metrics["threads"] == 1
