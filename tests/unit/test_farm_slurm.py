"""The Slurm engine's pure parts: sbatch arguments, the job script, placement, done markers, the board side
exiting at once on a finished key. No cluster, docker or network (tests/integration/test_farm_slurm_cluster.py runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.cache import sha256_digest
from packager.farm import node, slurm
from packager.farm.jobs import DeviceNeed, FarmJob
from packager.farm.store import (
    ATTEMPTS_NAME,
    DONE_NAME,
    JOB_NAME,
    JobSpec,
    done_record,
    read_lines,
)
from packager.platforms import Platform

IMAGE = "127.0.0.1:5000/request-pack/x@sha256:" + "a" * 64


def _job(platform=Platform.AMD64, devices=DeviceNeed(), stage="functional") -> FarmJob:
    return FarmJob("x", Path("/art/x"), "b" * 64, platform, stage, IMAGE, devices)


def test_sbatch_places_by_feature_gres_and_keeps_one_job_per_key(tmp_path):
    job = _job(Platform.ARMV7, DeviceNeed(gpus=2, fpga=True))
    argv = slurm.sbatch_argv(job, tmp_path, "boards")
    assert argv[:2] == ["sbatch", "--parsable"]
    assert "--constraint=armv7&fpga" in argv and "--gres=gpu:2" in argv and "--partition=boards" in argv
    assert "--requeue" in argv and "--dependency=singleton" in argv
    assert f"--job-name={job.name}" in argv and f"--comment={job.key}" in argv
    assert argv[-1] == str(tmp_path / "job.sh")
    cpu = slurm.sbatch_argv(_job(), tmp_path, None)
    assert "--constraint=amd64" in cpu and not any(a.startswith(("--gres", "--partition")) for a in cpu)


def test_job_script_names_the_board_at_run_time(tmp_path):
    spec = JobSpec.of(_job(), dataset=tmp_path, build_root=tmp_path, signing_key=None, python="/venv/bin/python")
    script = slurm.job_script(spec, tmp_path)
    assert script.startswith("#!/bin/bash\n") and "$SLURMD_NODENAME" in script.replace("{", "").replace(":-?}", "")
    assert "%N" not in script
    assert f"exec /venv/bin/python -m packager.farm.node {tmp_path / JOB_NAME}" in script


def test_evaluate_argv_resumes_into_the_key_directory(tmp_path):
    spec = JobSpec.of(_job(), dataset=tmp_path, build_root=tmp_path, signing_key=tmp_path / "k.key", python="py")
    argv = node.evaluate_argv(spec, tmp_path / "key")
    assert argv[:4] == ["py", "-m", "packager.cli", "evaluate"]
    for flag, value in (("--image", IMAGE), ("--platform", "linux/amd64"), ("--stage", "functional"),
                        ("--out", str(tmp_path / "key")), ("--key", str(tmp_path / "k.key"))):
        assert argv[argv.index(flag) + 1] == value
    assert "--resume" in argv


def _nodes():
    return [slurm.Node("a", "idle", frozenset({"amd64"}), 0), slurm.Node("g", "down*", frozenset({"amd64"}), 1),
            slurm.Node("v", "idle", frozenset({"armv7", "fpga"}), 0)]


def test_placement_accepts_what_some_board_offers_even_when_down():
    slurm.check_placeable([_job(), _job(devices=DeviceNeed(gpus=1)), _job(Platform.ARMV7, DeviceNeed(fpga=True))],
                          _nodes(), None)


@pytest.mark.parametrize("need, words", [
    (("x", Platform.ARM64, DeviceNeed()), ["arm64", "amd64, armv7, fpga"]),
    (("x", Platform.AMD64, DeviceNeed(gpus=2)), ["2 GPU", "most GPUs on a node: 1"]),
    (("x", Platform.AMD64, DeviceNeed(fpga=True)), ["amd64&fpga"]),
])
def test_placement_refuses_what_no_board_offers(need, words):
    with pytest.raises(slurm.UnplaceableJob) as e:
        slurm.check_placeable([need], _nodes(), "boards")
    assert e.value.return_code == 2 and "partition boards" in str(e.value)
    for w in words:
        assert w in str(e.value)


def _finished(tmp_path: Path) -> Path:
    d = tmp_path / "key"
    d.mkdir()
    JobSpec.of(_job(), dataset=tmp_path, build_root=tmp_path, signing_key=None, python="py").dump(d / JOB_NAME)
    bundle = d / "x-linux-amd64-functional.bundle.tar.gz"
    bundle.write_bytes(b"signed bytes")
    (d / DONE_NAME).write_text(json.dumps({"bundle": bundle.name, "bundle_sha256": sha256_digest(bundle)}))
    return d


def test_done_marker_holds_only_while_the_bundle_is_unchanged(tmp_path):
    d = _finished(tmp_path)
    assert done_record(d) is not None
    (d / "x-linux-amd64-functional.bundle.tar.gz").write_bytes(b"other bytes")
    assert done_record(d) is None


def test_a_finished_key_exits_at_once_without_evaluating(tmp_path, monkeypatch):
    d = _finished(tmp_path)
    monkeypatch.setenv("SLURMD_NODENAME", "board7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert node.run_job(d / JOB_NAME) == 0
    (attempt,) = read_lines(d / ATTEMPTS_NAME)
    assert attempt["event"] == "skipped" and attempt["node"] == "board7" and attempt["restart"] == 1
    assert not (d / "functional").exists()


def test_squeue_numbers_old_and_new_shapes():
    assert slurm.squeue_seconds(1795639749) == 1795639749.0
    assert slurm.squeue_seconds({"set": True, "number": 5}) == 5.0
    assert slurm.squeue_seconds({"set": False, "number": 0}) is None and slurm.squeue_seconds(0) is None
