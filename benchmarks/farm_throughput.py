"""A simulated board farm: many logical slurmd boards on this host, scheduler-only jobs and real evaluations.

    python benchmarks/farm_throughput.py [--nodes 50] [--sched-jobs 300] [--stages functional,full] [--images 2]

Part A (scheduler only): ``--sched-jobs`` batch jobs of ``true``, each with the
constraint and GRES a farm job would carry, submitted with ``sbatch --parsable``
to ``--nodes`` boards (amd64/arm64/armv7 features, every tenth with ``gpu:1``).
What it measures is Slurm's own cost: client submit time per job, and from the
jobcomp records (1 s resolution) the queue wait and the jobs per second from
first submission to last completion.

Part B (real): the amd64 jobs of the fp32 and int8 EfficientNet-Lite0 artifacts,
one per stage of ``--stages`` (distinct idempotency keys: the same key twice
would be one job), on ``--images`` sample images, through the whole path: build-or-reuse, push by digest to a local docker-registry, ``sbatch``,
``request-pack evaluate`` on the board in docker, verify, done marker, then
``farm collect`` onto a SQLite scoreboard. Reported: submit-to-published wall
time and throughput, and per job the overhead around the evaluation (queue wait
plus the job's start and end, i.e. job wall time minus evaluate's own time).

A docker evaluation per job costs tens of seconds of CPU, so on a 2-core machine
part B is kept to a handful of jobs; part A is how a few hundred jobs scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # test scaffolding (a local Slurm, synthetic results) lives there

from localslurm import Board, LocalCluster  # noqa: E402

from packager.bundle.keys import TrustStore, generate_keypair  # noqa: E402
from packager.farm import jobs as farm_jobs  # noqa: E402
from packager.farm import slurm  # noqa: E402
from packager.farm.collect import collect  # noqa: E402
from packager.farm.images import ensure_images  # noqa: E402
from packager.farm.store import ATTEMPTS_NAME, SUBMISSIONS_NAME, read_lines  # noqa: E402
from packager.platforms import Platform  # noqa: E402

ARCHES = ("amd64", "arm64", "armv7")


def boards(n: int) -> tuple[Board, ...]:
    return tuple(Board(f"b{i:03d}", (ARCHES[i % 3],), gpus=1 if i % 10 == 9 else 0) for i in range(n))


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def scheduler_only(cluster: LocalCluster, n_jobs: int, work: Path) -> dict:
    env = cluster.env
    ids = []
    t0 = time.monotonic()
    for i in range(n_jobs):
        argv = ["sbatch", "--parsable", f"--constraint={ARCHES[i % 3]}", "--requeue", f"--job-name=sched-{i}",
                f"--output={work}/sched-%j.out", "--wrap=true"]
        if i % 10 == 9:
            argv.insert(2, "--gres=gpu:1")
        ids.append(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.strip())
    submit_s = time.monotonic() - t0
    pending = set(ids)
    while pending:
        time.sleep(0.5)
        comp = slurm.jobcomp_records(env=env)
        pending -= set(comp)
    wall = time.monotonic() - t0
    comp = slurm.jobcomp_records(env=env)
    recs = [comp[i] for i in ids]
    waits = [_ts(r["StartTime"]) - _ts(r["SubmitTime"]) for r in recs]
    span = max(_ts(r["EndTime"]) for r in recs) - min(_ts(r["SubmitTime"]) for r in recs)
    failed = sum(r["JobState"] != "COMPLETED" for r in recs)
    return {"jobs": n_jobs, "failed": failed, "submit_s": submit_s, "submit_ms_per_job": 1e3 * submit_s / n_jobs,
            "wall_s": wall, "jobs_per_s": n_jobs / wall, "span_s": span,
            "wait_mean_s": statistics.mean(waits), "wait_max_s": max(waits),
            "overhead_s_per_job": wall / n_jobs}


def _registry(work: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (work / "registry.yml").write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                                       f"    rootdirectory: {work}/registry\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(work / "registry.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


def real_jobs(cluster: LocalCluster, artifacts: list[Path], stages: list[str], images: int, sample: Path, work: Path) -> dict:
    env = cluster.env
    data = work / "data"
    (data / "images").mkdir(parents=True)
    header, *rows = (sample / "labels.tsv").read_text().splitlines()
    (data / "labels.tsv").write_text("\n".join([header, *rows[:images]]) + "\n")
    shutil.copyfile(sample / "synsets.tsv", data / "synsets.tsv")
    for row in rows[:images]:
        shutil.copyfile(sample / "images" / row.split("\t")[0], data / "images" / row.split("\t")[0])
    # Copies, so each artifact's default build root is this run's (evaluate's own verification
    # compares the image with the build record it finds beside the artifact).
    copies = []
    for art in artifacts:
        shutil.copytree(art, work / "artifacts" / art.name)
        copies.append(work / "artifacts" / art.name)
    artifacts = copies
    generate_keypair(work / "keys", "signing")
    proc, registry = _registry(work)
    try:
        t0 = time.monotonic()
        imgs = ensure_images(artifacts, registry, build_root=work / "build", platforms=[Platform.AMD64])
        jobs = [j for st in stages for j in farm_jobs.plan(artifacts, imgs, stage=st, platforms=[Platform.AMD64])]
        build_push_s = time.monotonic() - t0
        results = work / "results"
        t1 = time.monotonic()
        slurm.submit(jobs, results=results, dataset=data, build_root=work / "build",
                     signing_key=work / "keys" / "signing.key", env=env)
        slurm.wait(results, timeout=3600, env=env, poll=1.0)
        trust = TrustStore.load([work / "keys" / "signing.pub"])
        published = collect(results, f"sqlite:///{work / 'board.db'}", trust)
        wall = time.monotonic() - t1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    comp = slurm.jobcomp_records(env=env)
    overheads, runs = [], []
    for d in sorted(p.parent for p in results.glob("*/job.json")):
        job_id = read_lines(d / SUBMISSIONS_NAME)[-1]["job_id"]
        att = read_lines(d / ATTEMPTS_NAME)
        start = next(a["time"] for a in att if a["event"] == "start")
        done = next((a["time"] for a in att if a["event"] == "done"), None)
        if done is None:
            tail = "".join((d / f"slurm-{job_id}.out").read_text(errors="replace").splitlines(keepends=True)[-15:])
            print(f"job {job_id} in {d.name[:12]} did not finish: {att[-1]}\n{tail}", file=sys.stderr)
            continue
        c = comp[job_id]
        job_wall = _ts(c["EndTime"]) - _ts(c["SubmitTime"])
        runs.append(done - start)
        overheads.append(job_wall - (done - start))
    n = len(runs)
    ok = sum(c.ok for c in published)
    return {"jobs": n, "published": ok, "build_push_s": build_push_s, "submit_to_published_s": wall,
            "jobs_per_min": 60 * n / wall, "evaluate_mean_s": statistics.mean(runs),
            "overhead_mean_s": statistics.mean(overheads), "overhead_max_s": max(overheads)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--sched-jobs", type=int, default=300)
    ap.add_argument("--stages", default="functional,full", help="one real job per artifact and stage ('': skip part B)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--artifacts", nargs="*", type=Path,
                    default=[REPO / "artifacts" / "efficientnet-lite0-ort", REPO / "artifacts" / "efficientnet-lite0-ort-int8"])
    ap.add_argument("--sample", type=Path, default=Path(os.environ.get("REQUEST_PACK_SAMPLE", REPO.parent / "shared" / "data" / "imagenet-sample")))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (results, logs, board)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("DOCKER_API_VERSION", "1.41")
    work = Path(tempfile.mkdtemp(prefix="rp-farm-bench-"))
    try:
        t0 = time.monotonic()
        with LocalCluster(boards(args.nodes), work / "slurm") as cluster:
            print(f"cluster: {args.nodes} slurmd boards idle after {time.monotonic() - t0:.1f} s")
            a = scheduler_only(cluster, args.sched_jobs, work)
            print(f"A scheduler only: {a['jobs']} jobs ({a['failed']} not COMPLETED) on {args.nodes} boards: "
                  f"sbatch {a['submit_ms_per_job']:.0f} ms/job; all done in {a['wall_s']:.1f} s "
                  f"= {a['jobs_per_s']:.1f} jobs/s, {1e3 * a['overhead_s_per_job']:.0f} ms of scheduler time per job; "
                  f"queue wait mean {a['wait_mean_s']:.1f} s, max {a['wait_max_s']:.0f} s")
            stages = [s for s in args.stages.split(",") if s]
            if stages:
                b = real_jobs(cluster, [p.resolve() for p in args.artifacts], stages, args.images, args.sample, work)
                print(f"B real: {b['jobs']} jobs ({'/'.join(stages)} stage, {args.images} images, docker, amd64), "
                      f"{b['published']} published; build+push {b['build_push_s']:.1f} s; submit to published "
                      f"{b['submit_to_published_s']:.0f} s = {b['jobs_per_min']:.2f} jobs/min; evaluate {b['evaluate_mean_s']:.0f} s "
                      f"per job; scheduler + job start/end overhead {b['overhead_mean_s']:.1f} s mean, "
                      f"{b['overhead_max_s']:.0f} s max per job")
            print(json.dumps({"scheduler_only": a, **({"real": b} if stages else {})}, indent=2))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
