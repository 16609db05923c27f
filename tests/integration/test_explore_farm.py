"""``request-pack explore --farm slurm`` on a real Slurm 22.05 (one amd64 board on 127.0.0.1, its own munged,
slurmctld and slurmd) and a real docker-registry: two run-time points of the EfficientNet-Lite0 example become
two farm jobs that pull ONE image by digest, each evaluated with its own run config (functional stage on four
images of the shared sample), verified and published as one sweep group. Run again, nothing is submitted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from localslurm import Board, LocalCluster
from runner_helpers import assert_two_thread_points_of_one_image

pytestmark = [pytest.mark.slurm, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = next((a for a in (REPO / "artifacts" / "efficientnet-lite0", REPO / "artifacts" / "efficientnet-lite0-ort")
                 if (a / "request.lock").is_file()), REPO / "artifacts" / "efficientnet-lite0")
SPACE = "stage: functional\npoints:\n  - {threads: 1, batch: 1}\n  - {threads: 2, batch: 1}\n"
IMAGES = 4


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], cwd=cwd, env={**env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=1800, check=False)


def test_explore_on_slurm_runs_each_point_once_as_a_farm_job(tmp_path, shared_sample, registry):
    root = tmp_path
    art = Path(shutil.copytree(ARTIFACT, root / "artifacts" / ARTIFACT.name))
    data = root / "data"
    (data / "images").mkdir(parents=True)
    header, *rows = (shared_sample / "labels.tsv").read_text().splitlines()
    (data / "labels.tsv").write_text("\n".join([header, *rows[:IMAGES]]) + "\n")
    for row in rows[:IMAGES]:
        shutil.copyfile(shared_sample / "images" / row.split("\t")[0], data / "images" / row.split("\t")[0])
    (root / "space.yaml").write_text(SPACE)
    with LocalCluster((Board("amd64-a", ("amd64",)),), root / "slurm") as cluster:
        env = cluster.env
        assert _cli("keygen", "--out", str(root / "keys"), env=env, cwd=root).returncode == 0
        argv = ["explore", str(art), "--space", str(root / "space.yaml"), "--dataset", str(data),
                "--out", str(root / "sweep"), "--board", f"sqlite:///{root / 'board.db'}",
                "--key", str(root / "keys" / "signing.key"), "--build-root", str(root / "build"),
                "--farm", "slurm", "--registry", registry]
        res = _cli(*argv, env=env, cwd=root)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        again = _cli(*argv, env=env, cwd=root)
        assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]

    specs = sorted((json.loads(p.read_text()) for p in (root / "sweep" / "farm").glob("*/job.json")),
                   key=lambda s: s["run_config"])
    assert [s["run_config"] for s in specs] == ['{"batch":1,"threads":1}', '{"batch":1,"threads":2}']
    assert len({s["image"] for s in specs}) == 1 and "@sha256:" in specs[0]["image"]
    for s in specs:  # submitted once each: the second explore kept both points
        assert len((root / "sweep" / "farm" / s["key"] / "submissions.jsonl").read_text().splitlines()) == 1
    journal = [json.loads(line) for line in (root / "sweep" / "points.jsonl").read_text().splitlines()]
    assert [j["status"] for j in journal] == ["done", "done"]
    for j in journal:  # a farm job's figures are read as a local point's are, with what produced them
        assert j["measurement"] == "quick/native/loadgen" and j["samples"] > 0 and j["dataset"]
        assert j["p90_ms"] > 0 and j["images_per_s"] > 0 and j["offline_batch"] == 1
    assert again.stdout.count("kept") >= 2, again.stdout

    assert_two_thread_points_of_one_image(root / "board.db")
