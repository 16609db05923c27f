"""Reproducible TVM tuning, for real: MetaSchedule in resnet-tvm's own image, then the database pinned.

* ``python -m packager.harness.tune`` (what ``request-pack tune`` runs) tunes the tiny test
  net (64x64, 4 trials) inside the image, in the runner's sandbox (network none, read-only
  root), and writes a database that records trials, seed and the machine;
* the harness in the same image compiles the net with that database and gives the untuned
  outputs (within float32 reassociation), and its metrics name the database's sha256;
* ``tune.derive_tuned`` pins the database in a derived artifact (``tuning/<sha256>.json``); its
  image carries the file beside the model, and building it twice from clean layer state
  (``build --check``) gives the same index digest (about 2 minutes: the TVM wheel layer is
  written twice).

Where the tuning's time goes (cProfile of ``harness.tune.tune`` on the host, 8 trials, load 1-2.5): 61 s of
96 s was Python's ``inspect`` rescanning ``sys.modules`` while MetaSchedule imports its tensor intrinsics
(``harness.tune.frozen_frames_known`` now answers it: 9 s), and the rest is MetaSchedule's evolutionary search,
about 3-16 s per round of one task at that load (population 512, 4 generations, whatever the trials). 4 trials
are two rounds (the 16 tasks' first two, the dense and a mean), so the test pays for two searches, not the five of 8 trials;
it is a real tuning run still, with records. The real network is ``benchmarks/tvm_tuning.py``'s; the image
is resnet-tvm's, built once and reused.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from packager.harness.tuningdb import DB_NAME, read_database, with_cores
from packager.platforms import Platform

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RESNET = REPO / "artifacts" / "resnet-tvm"
SIZE = 64
# This checkout's harness over the image's: the image is reused while its request.yaml is unchanged.
HARNESS = (str(REPO / "packager"), "/opt/request/packager")
# Same TVM, same operators, other loop schedules: float32 reassociation only.
ATOL = 1e-4


def _config(mnt: Path, name: str, **options) -> str:
    cfg = {
        "name": "tiny-tvm",
        "model": {"input": {"name": "input", "shape": ["batch", 3, SIZE, SIZE], "layout": "NCHW"}, "num_classes": 1000},
        "framework": {"name": "tvm", "options": {"target": {"kind": "llvm"}, "opt_level": 3, **options}},
        "preprocessing": {"resize": 73, "crop": SIZE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "run": {"batch_sizes": [1], "scenarios": ["SingleStream"]},
    }
    (mnt / name).write_text(json.dumps(cfg))
    (mnt / name).chmod(0o644)
    return f"/mnt/tiny/{name}"


@pytest.fixture(scope="module")
def image():
    from packager.pipeline import image_for

    return image_for(RESNET, platform=Platform.AMD64)


@pytest.fixture(scope="module")
def tuned(image, tmp_path_factory):
    """The tiny net, its configs and the database tuned for it in the image."""
    from packager.engine import get_engine
    from packager.harness.tinynet import build
    from packager.run.runner import RunOptions, run_in_sandbox
    from packager.tune import TUNE_ENTRYPOINT

    mnt = tmp_path_factory.mktemp("mnt")
    mnt.chmod(0o755)  # read by the sandbox's uid 1000
    build(mnt / "tiny.onnx", size=SIZE).chmod(0o644)
    config = _config(mnt, "untuned.json")
    out, empty = tmp_path_factory.mktemp("tune-out"), tmp_path_factory.mktemp("empty")
    argv = ["--config", config, "--model", "/mnt/tiny/tiny.onnx", "--out", "/out", "--trials", "4", "--seed", "3"]
    opts = RunOptions(stage="tune", dataset=empty, out=out, platform=Platform.AMD64, extra_mounts=((str(mnt), "/mnt/tiny"), HARNESS))
    result = run_in_sandbox(get_engine("docker"), image, argv, opts, entrypoint=TUNE_ENTRYPOINT)
    assert result.exit_code == 0, result.container_log.read_text()[-3000:]
    assert result.record["sandbox"]["network"] == "none" and result.record["sandbox"]["read_only_rootfs"]
    return mnt, read_database(out / DB_NAME)


def _harness(image, mnt: Path, config: str, dataset: Path, out: Path):
    from packager.engine import get_engine
    from packager.run.runner import RunOptions, run_in_sandbox

    argv = ["--config", config, "--model", "/mnt/tiny/tiny.onnx", "--dataset", "/data", "--out", "/out", "--cache", "/tmp/cache",
            "--backend", "tvm", "--samples", "4", "--scenarios", "SingleStream", "--queries", "2", "--warmup", "1",
            "--performance-samples", "2", "--save-outputs"]
    opts = RunOptions(stage="functional", dataset=dataset, out=out, platform=Platform.AMD64,
                      extra_mounts=((str(mnt), "/mnt/tiny"), HARNESS))
    result = run_in_sandbox(get_engine("docker"), image, argv, opts)
    assert result.exit_code == 0, result.container_log.read_text()[-3000:]
    return np.load(out / "outputs.npz"), json.loads((out / "metrics.json").read_text())


def test_a_database_tuned_in_the_image_records_how_and_where(tuned):
    _, db = tuned
    assert db.trials == 4 and db.seed == 3 and db.tvm == "0.27.0.post1" and len(db.records) >= 1
    assert db.tuned_on["platform"] == "linux/amd64" and db.tuned_on["cores"] >= 1 and db.tuned_on["cpu_model"]
    assert json.loads(db.target)["num-cores"] == db.tuned_on["cores"]


def test_compiled_with_the_database_the_outputs_are_the_untuned_ones(image, tuned, shared_sample, tmp_path):
    mnt, db = tuned
    shutil.copyfile(db.path, mnt / "db.json")
    (mnt / "db.json").chmod(0o644)
    config = _config(mnt, "tuned.json", tuning_log="db.json", target=with_cores({"kind": "llvm"}, db.tuned_on["cores"]))
    plain, m_plain = _harness(image, mnt, _config(mnt, "untuned.json"), shared_sample, tmp_path / "untuned")
    fast, m_fast = _harness(image, mnt, config, shared_sample, tmp_path / "tuned")
    assert list(plain["ids"]) == list(fast["ids"]) and len(fast["ids"]) == 4
    assert np.abs(plain["outputs"] - fast["outputs"]).max() <= ATOL
    assert f"sha256:{db.sha256[:16]}" in m_fast["framework"] and "tuned on" in m_fast["framework"]
    assert m_plain["framework"].endswith("untuned")


def test_the_pinned_database_is_in_the_image_and_builds_reproduce(tuned, tmp_path):
    from packager.image.build import BuildOptions, build, check
    from packager.tune import derive_tuned

    _, db = tuned
    parent = tmp_path / "artifacts" / "resnet-tvm"
    shutil.copytree(RESNET, parent, ignore=shutil.ignore_patterns("image.json"))
    derived = derive_tuned(parent, "resnet-tvm-tuned", db, {"kind": "llvm"})
    rel = f"tuning/{db.sha256}.json"
    assert (derived / rel).read_bytes() == db.path.read_bytes()
    text = (derived / "request.yaml").read_text()
    assert rel in text and "num-cores" in text
    twice = check(derived, BuildOptions(platforms=(Platform.AMD64,)))
    assert twice.index_digests[0] == twice.index_digests[1], twice
    # a third build (layers from the cache) into a build root: the same index, and the database is
    # in the model layer, beside the model, with its own bytes
    built = build(derived, BuildOptions(platforms=(Platform.AMD64,), build_root=tmp_path / "build"))
    assert built.index.digest == twice.index_digests[0]
    oci = tmp_path / "build" / "resnet-tvm-tuned" / "oci"
    found = []
    for blob in (oci / "blobs" / "sha256").iterdir():
        if blob.stat().st_size > 200_000_000:
            continue  # the base and wheel layers
        try:
            with tarfile.open(blob) as tar:
                member = tar.getmember(f"opt/request/{rel}")
                found.append(tar.extractfile(member).read())
        except (tarfile.TarError, KeyError):
            continue
    assert found == [db.path.read_bytes()]
