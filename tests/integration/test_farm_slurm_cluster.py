"""The farm on a real Slurm 22.05: three artifacts on three kinds of board, a board taken down mid-run,
a GPU job placed by GRES, impossible requests refused at submit, collection onto a real scoreboard.

The module starts its own cluster on 127.0.0.1 (munged, slurmctld, one ``slurmd -N`` per
board: two amd64, two armv7, one amd64 with ``gpu:1``) and its own docker-registry; the
artifacts are copied from artifacts/ so their build goes to a temporary build root.
Four sample images. The armv7 copy is re-locked with a functional stage of 2 samples
and batch size 1: its accuracy pass then runs in two batches under QEMU (the board is
taken down between them, and the requeued job must resume from line 2 of
predictions.jsonl on the other armv7 board), and its emulated scenarios stay at two
queries (the runner caps them at the stage's sample count): the reference backend
takes seconds per image under QEMU, so this keeps the test to minutes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from localslurm import Board, LocalCluster

from packager.farm import jobs as farm_jobs
from packager.farm import slurm
from packager.farm.images import ensure_images
from packager.farm.store import ATTEMPTS_NAME, DONE_NAME, read_lines
from packager.platforms import Platform

pytestmark = [pytest.mark.slurm, pytest.mark.docker, pytest.mark.emulation, pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = ("efficientnet-lite0-ort", "efficientnet-lite0-ort-int8", "efficientnet-lite0-armv7")
ARMV7_SAMPLES = 2
# efficientnet-lite0 runs on three platforms; this farm runs its amd64/arm64 part and its armv7 part
# (shortened) as two artifacts of their own, derived from it (`request-pack derive`).
DERIVED = {"efficientnet-lite0-ort": ["platforms=[linux/amd64, linux/arm64]"],
           "efficientnet-lite0-armv7": ["platforms=[linux/arm/v7]", "runs.linux/arm/v7.batch_sizes=[1]",
                                        f"run.stages.functional.samples={ARMV7_SAMPLES}"]}
BOARDS = (
    Board("amd64-a", ("amd64",)), Board("amd64-b", ("amd64",)),
    Board("armv7-a", ("armv7",)), Board("armv7-b", ("armv7",)),
    Board("gpu-a", ("amd64",), gpus=1),
)
IMAGES = 4
TIMEOUT = 900


def _cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], cwd=cwd, env={**env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(BOARDS, tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shared_sample, cluster):
    """Artifact copies (fetched; the armv7 one shortened and re-locked), a signing key and a four-image dataset."""
    root = tmp_path_factory.mktemp("farm")
    env = cluster.env
    parent = root / "artifacts" / "efficientnet-lite0"
    shutil.copytree(REPO / "artifacts" / parent.name, parent)  # the int8 one's parent too
    for name in ARTIFACTS:
        art = root / "artifacts" / name
        steps = [["fetch", str(art)]]
        if name in DERIVED:
            steps.insert(0, ["derive", str(parent), *(a for s in DERIVED[name] for a in ("--set", s)), "--name", name])
        else:
            shutil.copytree(REPO / "artifacts" / name, art)
        for step in steps:
            res = _cli(*step, env=env, cwd=root)
            assert res.returncode == 0, res.stderr[-2000:]
    assert _cli("keygen", "--out", str(root / "keys"), env=env, cwd=root).returncode == 0
    data = root / "data"
    (data / "images").mkdir(parents=True)
    header, *rows = (shared_sample / "labels.tsv").read_text().splitlines()
    rows = rows[:IMAGES]
    (data / "labels.tsv").write_text("\n".join([header, *rows]) + "\n")
    shutil.copyfile(shared_sample / "synsets.tsv", data / "synsets.tsv")
    for row in rows:
        shutil.copyfile(shared_sample / "images" / row.split("\t")[0], data / "images" / row.split("\t")[0])
    return root


def _key_dir(results: Path, artifact: str) -> Path:
    (found,) = [p.parent for p in results.glob("*/job.json") if json.loads(p.read_text())["artifact"] == artifact]
    return found


@pytest.fixture(scope="module")
def farm(workspace, cluster, registry):
    """Submit everything, take the armv7 job's board down between its two batches, wait for the lot."""
    root, env = workspace, cluster.env
    results, gpu_results = root / "results", root / "results-gpu"
    t0 = time.monotonic()
    res = _cli("farm", "submit", *(str(root / "artifacts" / a) for a in ARTIFACTS), "--scheduler", "slurm",
               "--platform", "linux/amd64", "--platform", "linux/arm/v7", "--stage", "functional",
               "--registry", registry, "--results", str(results), "--dataset", str(root / "data"),
               "--key", str(root / "keys" / "signing.key"), "--build-root", str(root / "build"), env=env, cwd=root)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    submitted = time.monotonic() - t0
    assert res.stdout.count("submitted as job") == 3, res.stdout

    # The GPU job: the fp32 artifact's amd64 job, asking for one GPU (a GRES only gpu-a has).
    art = root / "artifacts" / ARTIFACTS[0]
    images = ensure_images([art], registry, build_root=root / "build", platforms=[Platform.AMD64])
    (cpu_job,) = farm_jobs.plan([art], images, stage="functional", platforms=[Platform.AMD64],
                                 dataset=root / "data")
    gpu_job = dataclasses.replace(cpu_job, devices=farm_jobs.DeviceNeed(gpus=1))
    (gpu_sub,) = slurm.submit([gpu_job], results=gpu_results, dataset=root / "data", build_root=root / "build",
                              signing_key=root / "keys" / "signing.key", env=env)

    # Down the armv7 board once the first batch of four predictions is on disk.
    armv7 = _key_dir(results, "efficientnet-lite0-armv7")
    preds = armv7 / "functional" / "predictions.jsonl"
    downed, lines_at_down = None, None
    deadline = time.monotonic() + TIMEOUT
    while downed is None and time.monotonic() < deadline:
        n = len(preds.read_text().splitlines()) if preds.is_file() else 0
        if 0 < n < ARMV7_SAMPLES:
            downed = read_lines(armv7 / ATTEMPTS_NAME)[-1]["node"]
            cluster.scontrol("update", f"nodename={downed}", "state=down", "reason=test")
            lines_at_down = n
        elif n >= ARMV7_SAMPLES or (armv7 / DONE_NAME).exists():
            break
        time.sleep(0.2)
    try:
        rows = slurm.wait(results, timeout=TIMEOUT, env=env) + slurm.wait(gpu_results, timeout=TIMEOUT, env=env)
    finally:
        if downed:
            cluster.scontrol("update", f"nodename={downed}", "state=resume")
    wall = time.monotonic() - t0
    print(f"\nfarm: submit (build+push+sbatch) {submitted:.1f} s; 3 jobs + GPU job to the end {wall:.0f} s; "
          f"armv7 board {downed} downed at {lines_at_down}/{ARMV7_SAMPLES} predictions")
    return dataclasses.make_dataclass("Farm", ["root", "env", "results", "gpu_results", "gpu_job", "gpu_sub", "rows",
                                               "downed", "lines_at_down", "armv7", "registry"])(
        root, env, results, gpu_results, gpu_job, gpu_sub, rows, downed, lines_at_down, armv7, registry)


def test_three_artifacts_on_three_boards_end_to_end(farm):
    rows = {r.artifact: r for r in slurm.status(farm.results, env=farm.env)}
    assert set(rows) == set(ARTIFACTS)
    for name, r in rows.items():
        assert r.state == "COMPLETED" and r.stage == "done" and r.verified, r
        d = farm.results / r.key
        assert len(list(d.glob("*.bundle.tar.gz"))) == 1
        done = json.loads((d / DONE_NAME).read_text())
        assert done["image"].startswith(f"{farm.registry}/request-pack/{name}@sha256:")
        metrics = json.loads((d / "functional" / "metrics.json").read_text())
        assert metrics["accuracy"]["samples"] == (ARMV7_SAMPLES if name.endswith("armv7") else IMAGES)
    assert rows["efficientnet-lite0-armv7"].node.startswith("armv7-")
    assert {rows[a].node for a in ARTIFACTS[:2]} <= {"amd64-a", "amd64-b", "gpu-a"}
    # The emulated board really ran an armv7 image.
    system = json.loads((farm.armv7 / "functional" / "system.json").read_text())
    assert system["machine"] == "armv7l"

    res = _cli("farm", "status", "--results", str(farm.results), env=farm.env, cwd=farm.root)
    assert res.returncode == 0 and res.stdout.count("COMPLETED") == 3, res.stdout


def test_board_down_mid_run_requeues_and_resumes(farm):
    assert farm.downed is not None, "the armv7 job finished its predictions before the board could be taken down"
    starts = [a for a in read_lines(farm.armv7 / ATTEMPTS_NAME) if a["event"] == "start"]
    assert len(starts) == 2 and starts[0]["node"] == farm.downed, starts
    assert starts[1]["node"] != farm.downed and starts[1]["node"].startswith("armv7-")
    assert starts[1]["restart"] == 1 and starts[0]["job_id"] == starts[1]["job_id"]  # Slurm's requeue, not ours
    ids = [json.loads(line)["id"] for line in (farm.armv7 / "functional" / "predictions.jsonl").read_text().splitlines()]
    images = sorted(p.name for p in (farm.root / "data" / "images").iterdir())
    assert len(ids) == len(set(ids)) == ARMV7_SAMPLES and set(ids) <= set(images)  # none lost, none twice
    run = json.loads((farm.armv7 / "functional" / "run.json").read_text())
    assert run["resumed_after"] == farm.lines_at_down
    assert len(list(farm.armv7.glob("*.bundle.tar.gz"))) == 1


def test_gpu_job_lands_only_on_the_gpu_board(farm):
    d = farm.gpu_sub.path
    (row,) = slurm.status(farm.gpu_results, env=farm.env)
    assert row.state == "COMPLETED" and row.verified and row.node == "gpu-a"
    assert {a["node"] for a in read_lines(d / ATTEMPTS_NAME)} == {"gpu-a"}
    (sub,) = read_lines(d / "submissions.jsonl")
    assert "--gres=gpu:1" in sub["argv"]
    # A GPU job is another result than the CPU job of the same image: its own key.
    assert d.name == farm.gpu_job.key != _key_dir(farm.results, ARTIFACTS[0]).name


def test_collect_publishes_each_bundle_once(farm):
    board = farm.root / "board.db"
    args = ("farm", "collect", "--results", str(farm.results), "--board", f"sqlite:///{board}",
            "--trust", str(farm.root / "keys" / "signing.pub"))
    first = _cli(*args, env=farm.env, cwd=farm.root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 published" in first.stdout
    again = _cli(*args, env=farm.env, cwd=farm.root)
    assert again.returncode == 0 and "3 present" in again.stdout, again.stdout
    with sqlite3.connect(board) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        table = "results" if "results" in tables else next(t for t in tables if "result" in t)
        assert db.execute(f"select count(*) from {table}").fetchone()[0] == 3


def test_resubmit_and_requeue_after_success_never_rerun(farm):
    before = {j.job_id for j in slurm.queue(env=farm.env)}
    root = farm.root
    res = _cli("farm", "submit", *(str(root / "artifacts" / a) for a in ARTIFACTS), "--platform", "linux/amd64",
               "--platform", "linux/arm/v7", "--stage", "functional", "--registry", farm.registry,
               "--results", str(farm.results), "--dataset", str(root / "data"),
               "--key", str(root / "keys" / "signing.key"), "--build-root", str(root / "build"), env=farm.env, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("done (verified result)") == 3 and "submitted" not in res.stdout
    assert {j.job_id for j in slurm.queue(env=farm.env)} == before

    # Slurm itself runs a finished job again: the job exits at once, the result stays as it was.
    d = _key_dir(farm.results, ARTIFACTS[1])
    done = (d / DONE_NAME).read_bytes()
    job_id = read_lines(d / "submissions.jsonl")[-1]["job_id"]
    subprocess.run(["scontrol", "requeue", job_id], env=farm.env, check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if read_lines(d / ATTEMPTS_NAME)[-1]["event"] == "skipped":
            break
        time.sleep(0.5)
    assert read_lines(d / ATTEMPTS_NAME)[-1]["event"] == "skipped"
    assert (d / DONE_NAME).read_bytes() == done and len(list(d.glob("*.bundle.tar.gz"))) == 1
    slurm.wait(farm.results, timeout=120, env=farm.env)


def test_collect_reports_a_tampered_bundle(farm, tmp_path):
    src = _key_dir(farm.results, ARTIFACTS[0])
    bad_results = tmp_path / "results"
    shutil.copytree(src, bad_results / src.name)
    (bundle,) = (bad_results / src.name).glob("*.bundle.tar.gz")
    out = io.BytesIO()
    with tarfile.open(bundle) as tin, tarfile.open(fileobj=out, mode="w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if m.name.endswith("predictions.jsonl"):
                lines = data.decode().splitlines()
                first = json.loads(lines[0])
                first["top5"] = [(first["top5"][0] + 1) % 1000] + first["top5"][1:]
                lines[0] = json.dumps(first, sort_keys=True, separators=(",", ":"))
                data = ("\n".join(lines) + "\n").encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    bundle.write_bytes(out.getvalue())
    board = tmp_path / "board.db"
    res = _cli("farm", "collect", "--results", str(bad_results), "--board", f"sqlite:///{board}",
               "--trust", str(farm.root / "keys" / "signing.pub"), env=farm.env, cwd=farm.root)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "bad" in res.stdout and "failed" in res.stdout and "1 bad" in res.stdout, res.stdout


def test_impossible_requests_fail_at_submit(cluster, workspace, registry):
    env, root = cluster.env, workspace
    before = {j.job_id for j in slurm.queue(env=env)}
    res = _cli("farm", "submit", str(root / "artifacts" / ARTIFACTS[0]), "--platform", "linux/arm64",
               "--registry", registry, "--results", str(root / "never"), "--dataset", str(root / "data"),
               "--build-root", str(root / "build-never"), env=env, cwd=root)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "arm64" in res.stderr and "pend for ever" in res.stderr
    assert not (root / "build-never").exists()  # refused before anything was built

    nodes = slurm.nodes(env=env)
    need = ("x", Platform.AMD64, farm_jobs.DeviceNeed(gpus=2))
    with pytest.raises(slurm.UnplaceableJob, match="2 GPU"):
        slurm.check_placeable([need], nodes, None)
    with pytest.raises(slurm.UnplaceableJob, match="fpga"):
        slurm.check_placeable([("x", Platform.ARMV7, farm_jobs.DeviceNeed(fpga=True))], nodes, None)
    assert {j.job_id for j in slurm.queue(env=env)} == before
