"""kill -9 of the container mid-run, then --resume: no prediction lost, none duplicated.

The real harness (``python -m packager.harness``, reference backend, the fixed-seed
tiny ONNX net) runs in the sandbox. Until the artifact images of ``request-pack
build`` are available to tests, its interpreter and this working copy are bound
read-only into the busybox test image (merged /usr: the host's /usr, the Python
prefix and the repository); the sandbox settings are the runner's own.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from runner_helpers import import_busybox

from packager.engine.docker import Docker
from packager.errors import StageFailed
from packager.manifest import Manifest
from packager.platforms import Platform
from packager.results import read_predictions
from packager.run.runner import ImageRef, RunOptions, run_stage

REPO = Path(__file__).resolve().parents[2]
SAMPLES = 60


def _host_python_mounts() -> tuple[tuple[str, str], ...]:
    paths = {"/usr", sys.base_prefix, sys.prefix, str(REPO)}
    if Path("/etc/ld.so.cache").exists():
        paths.add("/etc/ld.so.cache")
    return tuple((p, p) for p in sorted(paths))


def _manifest(model: Path) -> Manifest:
    return Manifest.model_validate({
        "name": "resume-test", "version": "0", "authors": [{"name": "t"}], "license": "Apache-2.0",
        "task": "imagenet-classification",
        "model": {"source": {"kind": "file", "path": "tiny.onnx"}, "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
                  "precision": "fp32", "input": {"name": "input", "shape": ["batch", 3, 224, 224]}},
        "framework": {"name": "reference", "version": "1"},
        "dataset": {"layout": "labels-tsv"},
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "platforms": ["linux/amd64"],
        "run": {"scenarios": ["SingleStream"], "batch_sizes": [1], "warmup": 0,
                "stages": {"functional": {"samples": SAMPLES}, "full": {}}},
    })


def test_kill_9_then_resume_loses_and_duplicates_nothing(docker_client, tiny_model, shared_sample, tmp_path):
    model_in_container = "/model/tiny.onnx"
    image = import_busybox(docker_client, tmp_path, tag="harness", env={"REQUEST_PACK_MODEL": model_in_container})
    ref = ImageRef("resume-test", Platform.native(), image)
    manifest = _manifest(tiny_model)
    mounts = _host_python_mounts() + ((str(tiny_model.parent), "/model"),)
    env = {"PYTHONPATH": str(REPO), "PATH": f"{sys.prefix}/bin:/usr/bin:/bin"}
    out = tmp_path / "out"
    opts = RunOptions(stage="functional", dataset=shared_sample, out=out, platform=Platform.native(),
                      env=env, extra_mounts=mounts)
    engine = Docker()
    preds = out / "predictions.jsonl"
    killed_at: list[int] = []

    def killer(container_id: str) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                n = preds.read_bytes().count(b"\n") if preds.exists() else 0
                if n >= 5:
                    docker_client.api.kill(container_id, signal="SIGKILL")
                    killed_at.append(n)
                    return
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()

    t0 = time.monotonic()
    with pytest.raises(StageFailed, match="functional.*137.*--resume"):
        run_stage(manifest, ref, engine, opts, on_start=killer)
    first = time.monotonic() - t0
    assert killed_at, "the harness finished before it could be killed"
    before = read_predictions(preds) if preds.read_bytes().endswith(b"\n") else None
    kept = preds.read_bytes()
    lines_kept = kept.count(b"\n")
    assert 0 < lines_kept < SAMPLES, f"killed after {killed_at[0]} lines, file has {lines_kept}"

    t1 = time.monotonic()
    result = run_stage(manifest, ref, engine, RunOptions(**{**opts.__dict__, "resume": True}))
    second = time.monotonic() - t1
    print(f"killed run {first:.1f} s (after {killed_at[0]} predictions), resumed run {second:.1f} s")
    assert result.exit_code == 0
    final = read_predictions(preds)
    ids = [p.id for p in final]
    assert len(ids) == len(set(ids)) == SAMPLES
    labels = (shared_sample / "labels.tsv").read_text().splitlines()[1 : SAMPLES + 1]
    assert set(ids) == {line.split("\t")[0] for line in labels}
    # what survived the kill is kept byte for byte (a torn last line would have been cut)
    whole = kept[: kept.rfind(b"\n") + 1]
    assert preds.read_bytes().startswith(whole)
    if before is not None:
        assert final[: len(before)] == before
    docker_client.images.remove(image, force=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"]["samples"] == SAMPLES
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_after"] == whole.count(b"\n")
    system = json.loads((out / "system.json").read_text())
    assert system["sandbox"]["network"] == "none" and system["image_digest"] == image
