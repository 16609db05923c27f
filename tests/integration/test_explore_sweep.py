"""``request-pack explore`` for real on the shared 200-image sample. First a run-time sweep of the example artifact
(functional stage, 20 images), killed with SIGKILL in its second point and run again.

The first run builds the image once (from the machine's cache, into a private build root) and finishes
point 1; SIGKILL lands while point 2's container runs. The second run removes that orphaned container,
keeps point 1 (its journal line, bundle and board row are not made again) and finishes point 2. Both
points are verified results on the board, in one sweep group, measured on ONE image digest.

Then a build-time point (precision int8) beside a run-time one: a derived artifact with its own image.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_helpers import assert_two_thread_points_of_one_image, cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "artifacts" / "efficientnet-lite0"
SPACE = """\
stage: functional
# batch 1 only: the Offline scenario at one batch size keeps each point short
points:
  - {threads: 1, batch: 1}
  - {threads: 2, batch: 1}
"""


def _explore(root: Path, space: Path, dataset: Path, key: Path) -> list[str]:
    art = root / "artifacts" / ARTIFACT.name
    if not art.is_dir():  # a private copy (its components come from the checkout)
        shutil.copytree(ARTIFACT, art)
    return [sys.executable, "-m", "packager.cli", "explore", str(art), "--space", str(space),
            "--dataset", str(dataset), "--out", str(root / "sweep"), "--board", f"sqlite:///{root / 'board.db'}",
            "--key", str(key), "--build-root", str(root / "build")]


def _journal(root: Path) -> list[dict]:
    path = root / "sweep" / "points.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _containers_of(root: Path) -> list[str]:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", "label=request-pack.run"], capture_output=True,
                         text=True, check=True).stdout.split()
    if not ids:
        return []
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout or "[]")
    return [c["Id"] for c in inspected if any(str(root) in str(m.get("Source", "")) for m in c.get("Mounts", []))]


def test_sweep_resumes_after_kill_and_publishes_verified_points_of_one_image(tmp_path, shared_sample):
    root = tmp_path
    assert cli("keygen", "--out", str(root / "keys"), cwd=root).returncode == 0
    key = root / "keys" / "signing.key"
    space = root / "space.yaml"
    space.write_text(SPACE)
    argv = _explore(root, space, shared_sample, key)

    # 1. first run: point 1 finishes, then SIGKILL while point 2's container runs
    t0 = time.monotonic()
    with open(root / "first.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_journal(root)) == 1 and _containers_of(root / "sweep" / "points"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, (root / "first.log").read_text()[-3000:]
        assert len(_journal(root)) == 1 and _containers_of(root / "sweep" / "points"), "point 2 never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _journal(root)[0]
    assert first["status"] == "done" and first["knobs"] == {"run.threads": 1, "run.batch": 1}
    bundle1 = Path(first["bundle"])
    stamp1 = bundle1.stat().st_mtime_ns
    orphans = _containers_of(root / "sweep" / "points")
    print(f"first run killed after {time.monotonic() - t0:.0f} s with {len(orphans)} container(s) left running")

    # 2. second run: point 1 kept, point 2 resumed and finished, the orphan removed
    t1 = time.monotonic()
    res = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=900)
    print(f"second run {time.monotonic() - t1:.0f} s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "1 image digest(s), 0 rebuild(s)" in " ".join(res.stdout.split()), res.stdout
    journal = _journal(root)
    assert [j["knobs"] for j in journal] == [{"run.threads": 1, "run.batch": 1}, {"run.threads": 2, "run.batch": 1}]
    assert [j["status"] for j in journal] == ["done", "done"]
    for j in journal:  # the summary's figures, each with what produced it (kept for the kept point too)
        assert j["measurement"] == "quick/native/loadgen" and j["samples"] == 20 and "sample" in j["dataset"]
        assert j["p90_ms"] > 0 and j["images_per_s"] > 0 and j["offline_batch"] == 1
    assert bundle1.stat().st_mtime_ns == stamp1  # point 1 was not evaluated again
    assert not _containers_of(root / "sweep" / "points")

    # 3. the board: one sweep group, two verified results of ONE image, each with its own run config
    sweep = assert_two_thread_points_of_one_image(root / "board.db")
    assert any(sweep.on_frontier(p) for p in sweep.points)
    for j in journal:
        ok = cli("verify", j["bundle"], "--trust", str(root / "keys" / "signing.pub"), "--dataset", str(shared_sample),
                 cwd=root)
        assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_build_time_point_is_a_derived_artifact_with_its_own_image(tmp_path, shared_sample):
    """precision int8 beside the parent's fp32: `derive` writes efficientnet-lite0-int8 next to the (copied) parent,
    it is built once (its converted model and layers come from the cache) and evaluated; run again, both points
    are kept and the variant is reused, not derived again."""
    root = tmp_path
    assert cli("keygen", "--out", str(root / "keys"), cwd=root).returncode == 0
    space = root / "space.yaml"
    space.write_text("stage: functional\npoints:\n  - {threads: 1, batch: 1}\n"
                     "  - {precision: int8, threads: 1, batch: 1}\n")
    argv = _explore(root, space, shared_sample, root / "keys" / "signing.key")
    res = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=1200, check=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    variant = root / "artifacts" / f"{ARTIFACT.name}-int8"
    text = (variant / "request.yaml").read_text()
    assert f"parent: ../{ARTIFACT.name}" in text and "precision: int8" in text and (variant / "request.lock").is_file()
    journal = _journal(root)
    assert [j["status"] for j in journal] == ["done", "done"]
    assert len({j["image_digest"] for j in journal}) == 2  # one image per variant
    stamp = (variant / "request.yaml").stat().st_mtime_ns
    again = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert len(_journal(root)) == 2 and (variant / "request.yaml").stat().st_mtime_ns == stamp

    import sqlalchemy as sa

    from packager.scoreboard.store import Board, results

    with Board(f"sqlite:///{root / 'board.db'}") as board, board.engine.connect() as conn:
        rows = conn.execute(sa.select(results.c.artifact, results.c.precision)).all()
    assert sorted(rows) == [(ARTIFACT.name, "fp32"), (f"{ARTIFACT.name}-int8", "int8")]
