"""``request-pack tune``'s refusals before any image or container, and the pinned name of a database."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert len(lines) == 1 and "only a tvm build can be tuned" in lines[0] and "framework.name" in lines[0], p.stderr
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
