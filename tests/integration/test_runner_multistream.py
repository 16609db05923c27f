"""MultiStream through the runner's sandbox: the real harness with LoadGen (read-only root, no network, /out the
only writable place) leaves the per-query records that verify recomputes the signed figures from.

As in test_runner_large_dataset, the busybox test image gets the host's interpreter (its onnxruntime and
mlcommons-loadgen) and this working copy bound read-only; the model is the fixed-seed tiny net, the data the
functional stage's 20 images of the shared 200-image sample (not the validation set).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from runner_helpers import import_busybox

from packager.bundle.recompute import multistream_problems
from packager.engine.docker import Docker
from packager.manifest import Manifest
from packager.platforms import Platform
from packager.results import Metrics
from packager.run.runner import ImageRef, RunOptions, run_stage

pytestmark = [pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]


def test_multistream_in_the_sandbox_leaves_its_per_query_records(docker_client, tiny_model, shared_sample, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    image = import_busybox(docker_client, tmp_path, tag="harness", env={"REQUEST_PACK_MODEL": "/model/tiny.onnx"})
    manifest = Manifest.model_validate({
        "name": "multistream-test", "version": "0", "authors": [{"name": "t"}], "license": "Apache-2.0",
        "task": "imagenet-classification",
        "model": {"source": {"kind": "file", "path": "tiny.onnx"}, "sha256": hashlib.sha256(tiny_model.read_bytes()).hexdigest(),
                  "precision": "fp32", "input": {"name": "input", "shape": ["batch", 3, 224, 224]}},
        "framework": {"name": "onnxruntime", "version": "1", "options": {"threads": 1}},
        "dataset": {"layout": "labels-tsv"},
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "platforms": ["linux/amd64"],
        "run": {"scenarios": ["MultiStream"], "batch_sizes": [1], "warmup": 8,
                "stages": {"functional": {"samples": 20}, "full": {}}},
    })
    mounts = {"/usr", sys.base_prefix, sys.prefix, str(REPO)} | ({"/etc/ld.so.cache"} if Path("/etc/ld.so.cache").exists() else set())
    out = tmp_path / "out"
    opts = RunOptions(stage="functional", dataset=shared_sample, out=out, platform=Platform.native(),
                      env={"PYTHONPATH": str(REPO), "PATH": f"{sys.prefix}/bin:/usr/bin:/bin"},
                      extra_mounts=tuple((p, p) for p in sorted(mounts)) + ((str(tiny_model.parent), "/model"),))
    result = run_stage(manifest, ImageRef("multistream-test", Platform.native(), image), Docker(), opts)
    assert result.exit_code == 0
    m = Metrics.model_validate_json((out / "metrics.json").read_text())
    ms = m.multistream
    assert m.latency is None and not m.throughput  # only the scenario asked for
    assert ms is not None and ms.samples_per_query == 8 and ms.batch_size == 8 and ms.count >= 662
    assert ms.early_stopping_p99_s is not None and ms.p99_s <= ms.early_stopping_p99_s
    assert (out / "loadgen" / "MultiStream" / "mlperf_log_trace.json").stat().st_size == 0
    assert multistream_problems(out, ms) == []
    assert m.measurement is not None and m.measurement.key == "quick/native/loadgen"
    assert json.loads((out / "run.json").read_text())["sandbox"]["network"] == "none"
