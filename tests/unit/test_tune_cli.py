"""``request-pack tune``'s refusals before any image or container, and the pinned name of a database."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from packager.inputs.tuning import pinned_name, pinned_sha256

REPO = Path(__file__).resolve().parents[2]


def rp(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "packager.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "COLUMNS": "200"})


def test_a_framework_other_than_tvm_is_refused_in_one_line(tmp_path):
    p = rp("tune", REPO / "artifacts" / "efficientnet-lite0", "--trials", "4", "--seed", "1", "--out", tmp_path,
           "--platform", "linux/amd64")
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "only a tvm framework can be tuned" in lines[0] and "framework.name" in lines[0], p.stderr
    assert "the framework of linux/amd64 is onnxruntime" in lines[0], p.stderr
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize("args", [("--trials", "0", "--seed", "1"), ("--trials", "4", "--seed", "-1")])
def test_bad_trials_or_seed_are_refused(tmp_path, args):
    p = rp("tune", REPO / "artifacts" / "resnet-tvm", *args, "--out", tmp_path)
    assert p.returncode == 2 and "--trials" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_an_existing_derived_name_is_refused_before_tuning(tmp_path):
    p = rp("tune", REPO / "artifacts" / "resnet-tvm", "--trials", "4", "--seed", "1", "--out", tmp_path,
           "--name", "efficientnet-lite0")
    assert p.returncode == 2 and "already exists" in p.stderr, p.stderr


def test_the_name_of_a_database_pins_its_bytes():
    sha = hashlib.sha256(b"db").hexdigest()
    assert pinned_name(sha) == f"tuning/{sha}.json" and pinned_sha256(pinned_name(sha)) == sha
    for rel in ("tuning/db.json", f"tuning/{sha.upper()}.json", f"tuning/{sha}.yaml", f"tuning/{sha[:-1]}.json"):
        assert pinned_sha256(rel) is None, rel


def test_the_platform_asked_is_the_one_whose_framework_must_be_tvm(tmp_path):
    # efficientnet-lite0 chooses its framework per platform: arm/v7's is the reference executor
    p = rp("tune", REPO / "artifacts" / "efficientnet-lite0", "--trials", "4", "--seed", "1", "--out", tmp_path,
           "--platform", "linux/arm/v7")
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "frameworks.linux/arm/v7.name" in lines[0] and "the framework of linux/arm/v7 is reference" in lines[0], p.stderr
    p = rp("tune", REPO / "artifacts" / "resnet-tvm", "--trials", "4", "--seed", "1", "--out", tmp_path,
           "--platform", "linux/arm/v7")
    assert p.returncode == 2 and "linux/arm/v7 is not one of its platforms" in p.stderr, p.stderr
    assert not list(tmp_path.iterdir())


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "components", tmp_path / "components")
    shutil.copytree(REPO / "artifacts" / "resnet-tvm", tmp_path / "artifacts" / "resnet-tvm",
                    ignore=shutil.ignore_patterns("image.json", "README.md"))
    return tmp_path


def _database(tmp_path: Path, model_sha256: str):
    from packager.harness.tuningdb import DB_FORMAT, read_database, write_database

    doc = {"format": DB_FORMAT, "tvm": "0.27.0.post1", "target": '{"kind":"llvm","num-cores":2}',
           "model_sha256": model_sha256, "batch_sizes": [1], "trials": 8, "seed": 1, "cost_model": "random",
           "tuning_seconds": 12.5, "tuned_on": {"cpu_model": "AMD EPYC", "cores": 2, "platform": "linux/amd64",
                                                "machine": "x86_64"},
           "workloads": [["123", {"root_index": 1, "nodes": []}]], "records": [[0, [[], [0.001], {}, []]]]}
    write_database(doc, tmp_path / "db.json")
    return read_database(tmp_path / "db.json", model_sha256=model_sha256)


def test_a_tuned_platform_of_its_own_keeps_the_other_platforms(checkout):
    from packager.inputs.lock import lock
    from packager.manifest import load_manifest
    from packager.platforms import Platform
    from packager.tune import derive_tuned

    parent = checkout / "artifacts" / "resnet-tvm"
    db = _database(checkout, load_manifest(parent).model.sha256)
    arm64, amd64 = Platform.parse("linux/arm64"), Platform.parse("linux/amd64")
    # amd64 and arm64 share framework: the database and target are amd64's, so the tuned artifact is amd64's alone
    shared = load_manifest(derive_tuned(parent, "amd64-tuned", db, {"kind": "llvm"}, amd64))
    assert shared.platforms == [amd64] and shared.framework.options.tuning_log == f"tuning/{db.sha256}.json"
    assert (checkout / "artifacts" / "amd64-tuned" / f"tuning/{db.sha256}.json").is_file()
    mixed = checkout / "artifacts" / "mixed"
    shutil.copytree(parent, mixed)
    data = yaml.safe_load((mixed / "request.yaml").read_text())
    data["frameworks"] = {"linux/arm64": {"use": "tvm-0.27", "options": {"opt_level": 2}}}  # arm64's own entry
    (mixed / "request.yaml").write_text(yaml.safe_dump({**data, "name": "mixed"}, sort_keys=False))
    lock(mixed, reuse=parent)  # the same requirements and packages: every entry lent, nothing resolved
    # arm64 has its own entry: the database goes there, amd64 stays as it was
    tuned = load_manifest(derive_tuned(mixed, "arm64-tuned", db, {"kind": "llvm"}, arm64))
    assert tuned.platforms == [amd64, arm64]
    assert tuned.framework_for(arm64).options.tuning_log == f"tuning/{db.sha256}.json"
    assert tuned.framework_for(arm64).options.opt_level == 2 and "num-cores" in str(tuned.framework_for(arm64).options.target)
    assert tuned.framework_for(amd64).options.tuning_log is None
