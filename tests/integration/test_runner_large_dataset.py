"""Data sets larger than the sandbox's scratch: the tensor cache is a host directory, not the tmpfs.

The real harness (``python -m packager.harness``, reference backend, the fixed-seed tiny
ONNX net) runs in the runner's sandbox with its scratch shrunk to 32 MiB, on 400 distinct
generated JPEGs in the ILSVRC2012 validation layout (detected, not declared: the manifest
says labels-tsv). Their crops alone (59 MiB) and their float32 tensors (230 MiB) exceed the
scratch; before the cache moved out of /tmp the run failed with a raw OSError from the
decoding pool. As in test_runner_resume, the busybox test image gets the host's interpreter
and this working copy bound read-only. Also here: a cache with no room and a corrupt image
are one line naming the user's paths, never the container's.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from generated_images import generate
from runner_helpers import import_busybox

from packager.engine.docker import Docker
from packager.errors import StageFailed
from packager.manifest import Manifest
from packager.platforms import Platform
from packager.run.runner import ImageRef, RunOptions, run_stage

pytestmark = [pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
IMAGES = 400
SCRATCH = 32 * 1024**2


@pytest.fixture(scope="module")
def generated(tmp_path_factory, shared_sample) -> Path:
    root = tmp_path_factory.mktemp("large") / "ILSVRC2012_img_val"
    generate(root, IMAGES, shared_sample)
    return root


def _setup(docker_client, tiny_model: Path, tmp_path: Path) -> tuple[ImageRef, Manifest, dict]:
    image = import_busybox(docker_client, tmp_path, tag="harness", env={"REQUEST_PACK_MODEL": "/model/tiny.onnx"})
    manifest = Manifest.model_validate({
        "name": "large-test", "version": "0", "authors": [{"name": "t"}], "license": "Apache-2.0",
        "task": "imagenet-classification",
        "model": {"source": {"kind": "file", "path": "tiny.onnx"}, "sha256": hashlib.sha256(tiny_model.read_bytes()).hexdigest(),
                  "precision": "fp32", "input": {"name": "input", "shape": ["batch", 3, 224, 224]}},
        "framework": {"name": "reference", "version": "1"},
        "dataset": {"layout": "labels-tsv"},
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "platforms": ["linux/amd64"],
        "run": {"scenarios": ["SingleStream"], "batch_sizes": [8], "warmup": 0,
                "stages": {"functional": {"samples": 20}, "full": {}}},
    })
    mounts = {"/usr", sys.base_prefix, sys.prefix, str(REPO)} | ({"/etc/ld.so.cache"} if Path("/etc/ld.so.cache").exists() else set())
    opts = dict(platform=Platform.native(), scratch_bytes=SCRATCH,
                env={"PYTHONPATH": str(REPO), "PATH": f"{sys.prefix}/bin:/usr/bin:/bin"},
                extra_mounts=tuple((p, p) for p in sorted(mounts)) + ((str(tiny_model.parent), "/model"),))
    return ImageRef("large-test", Platform.native(), image), manifest, opts


def test_a_data_set_larger_than_scratch_runs_with_the_cache_on_the_host(docker_client, tiny_model, generated, tmp_path):
    ref, manifest, common = _setup(docker_client, tiny_model, tmp_path)
    crops = IMAGES * 224 * 224 * 3
    assert crops > SCRATCH and sum(p.stat().st_size for p in generated.iterdir()) > 0
    cache = tmp_path / "tensors"
    out = tmp_path / "out"
    opts = RunOptions(stage="full", dataset=generated, out=out, tensor_cache=cache, **common)
    result = run_stage(manifest, ref, Docker(), opts)
    assert result.exit_code == 0
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"]["samples"] == IMAGES
    assert metrics["dataset"] == {"layout": "ilsvrc2012-val", "labels": "val.txt", "images": ".", "synsets": None,
                                  "chosen": "detected", "samples": IMAGES}
    entries = list(cache.glob("crops/*/*.npy"))
    assert len(entries) == IMAGES, "one cached crop per distinct image, on the host"
    assert sum(e.stat().st_size for e in entries) > SCRATCH
    assert json.loads((out / "run.json").read_text())["sandbox"]["tmpfs"]["/tmp"].endswith("size=32m")
    # A second run reuses every crop: nothing is rewritten.
    mtimes = {e: e.stat().st_mtime_ns for e in entries}
    shutil.rmtree(out)
    run_stage(manifest, ref, Docker(), RunOptions(stage="full", dataset=generated, out=out, tensor_cache=cache, **common))
    assert {e: e.stat().st_mtime_ns for e in entries} == mtimes


def test_a_full_cache_and_a_corrupt_image_name_the_users_paths(docker_client, tiny_model, generated, tmp_path):
    ref, manifest, common = _setup(docker_client, tiny_model, tmp_path)
    small = tmp_path / "small-cache"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(StageFailed) as e:
            run_stage(manifest, ref, Docker(), RunOptions(stage="full", dataset=generated, out=tmp_path / "o1",
                                                          tensor_cache=small, **common))
        msg = str(e.value)
        assert "exited with 3" in msg and f"{small}/crops/" in msg and "needs about" in msg and "free" in msg
        assert "/tmp/cache" not in msg and "OSError" not in msg
    finally:
        subprocess.run(["umount", str(small)], check=False)

    broken = tmp_path / "broken"
    shutil.copytree(generated, broken)
    victim = broken / "ILSVRC2012_val_00000007.JPEG"
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(StageFailed) as e:
        run_stage(manifest, ref, Docker(), RunOptions(stage="full", dataset=broken, out=tmp_path / "o2",
                                                      tensor_cache=tmp_path / "t2", **common))
    assert str(victim) in str(e.value) and "/data/" not in str(e.value)
