"""Slurm as the farm's scheduler: ``sbatch`` places each job, ``squeue``/jobcomp report on it.

Only the command-line tools, with machine-readable output (pyslurm does not
build against 22.05): ``sinfo -o`` for what the boards offer, ``sbatch
--parsable``, ``squeue --json``, and the ``jobcomp/filetxt`` records for jobs
that left the queue (``sacct`` needs slurmdbd; its ``--json`` misreports exit
codes in this version).

Submission, per job:

1. the results directory ``RESULTS/<key>/`` with ``job.json`` and ``job.sh``;
2. skipped when the key has a valid done marker, or a live job of the same key
   (its ``--comment``) is in the queue;
3. refused, before anything is submitted, when no board of the partition has the
   job's architecture feature, its other features or its GPU count: such a job
   would pend for ever;
4. ``sbatch --parsable --constraint=<arch>[&fpga] [--gres=gpu:N] --requeue
   --dependency=singleton --job-name=<name> --comment=<key>``.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from packager.errors import BadInput, EnvironmentMissing, RequestPackError
from packager.farm.base import Collected, Farm, JobStatus, Submission
from packager.farm.jobs import ARCH_FEATURE, DeviceNeed, FarmJob
from packager.farm.store import (
    ATTEMPTS_NAME,
    JOB_NAME,
    SCRIPT_NAME,
    SUBMISSIONS_NAME,
    JobSpec,
    append_line,
    done_record,
    job_dirs,
    now,
    progress,
    read_lines,
)
from packager.manifest import MANIFEST_NAME, load_manifest
from packager.platforms import Platform
from packager.repo import default_build_root, default_sample_dataset

log = logging.getLogger(__name__)

LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                         "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})


class SlurmError(RequestPackError):
    """A Slurm command failed for a reason that is not the request's (controller down, bad config)."""

    return_code = 3


class UnplaceableJob(BadInput):
    """No board of the partition could ever run the job (feature or GPU count absent)."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EnvironmentMissing(f"{name} is not on PATH", fix="apt-get install -y slurm-client (or slurm-wlm)")
    return path


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [_tool(argv[0]), *argv[1:]]
    log.debug("+ %s", shlex.join(argv))
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"{argv[0]} did not answer within {timeout:.0f} s (is slurmctld up? SLURM_CONF?)") from e


# --- what the boards offer -----------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    state: str
    features: frozenset[str]
    gpus: int


def nodes(partition: str | None = None, *, env: dict[str, str] | None = None) -> list[Node]:
    argv = ["sinfo", "-h", "-N", "-o", "%N|%T|%f|%G"] + (["-p", partition] if partition else [])
    proc = _run(argv, env=env)
    if proc.returncode != 0:
        raise SlurmError(f"sinfo: {proc.stderr.strip() or 'failed'} (is slurmctld up? SLURM_CONF?)")
    out: dict[str, Node] = {}
    for line in proc.stdout.splitlines():
        name, state, features, gres = (line.split("|") + ["", "", ""])[:4]
        gpus = 0
        for g in gres.split(","):
            parts = g.split("(")[0].split(":")
            if parts[0] == "gpu" and parts[-1].isdigit():
                gpus += int(parts[-1])
        feats = frozenset(f for f in features.split(",") if f and f != "(null)")
        out[name] = Node(name, state, feats, gpus)
    return list(out.values())


Need = tuple[str, Platform, DeviceNeed]  # (artifact name, platform, devices): what placement depends on


def needs_of(artifacts: Iterable[Path], platforms: Iterable[Platform] | None = None) -> list[Need]:
    """What the jobs of ``artifacts`` will ask of the boards, known before any image is built."""
    wanted = set(platforms) if platforms is not None else None
    out: list[Need] = []
    for path in artifacts:
        manifest = load_manifest(path.parent if path.name == MANIFEST_NAME else path)
        out += [(manifest.name, p, DeviceNeed.of(manifest)) for p in manifest.platforms if wanted is None or p in wanted]
    return out


def check_placeable(needs: Iterable[Need | FarmJob], offered: Sequence[Node], partition: str | None) -> None:
    """Step 3: every job has at least one board with its features and GPU count, whatever its state now."""
    where = f"partition {partition}" if partition else "the cluster"
    if not offered:
        raise UnplaceableJob(f"{where} has no nodes", field="--partition")
    for need in needs:
        artifact, platform, devices = (need.artifact, need.platform, need.devices) if isinstance(need, FarmJob) else need
        want = {ARCH_FEATURE[platform], *devices.features}
        fits = [n for n in offered if want <= n.features and n.gpus >= devices.gpus]
        if not fits:
            have = sorted({f for n in offered for f in n.features})
            gpus = max(n.gpus for n in offered)
            raise UnplaceableJob(
                f"{artifact} on {platform}: no node of {where} has feature(s) {'&'.join(sorted(want))}"
                + (f" and {devices.gpus} GPU(s)" if devices.gpus else "")
                + f" (features offered: {', '.join(have) or 'none'}; most GPUs on a node: {gpus}); it would pend for ever",
                field="--platform")
        if not any(n.state.rstrip("*~#!%$@^-").lower() in ("idle", "mixed", "allocated", "completing") for n in fits):
            log.warning("%s on %s: every node that fits is unavailable now (%s); it will wait for one",
                        artifact, platform, ", ".join(f"{n.name}={n.state}" for n in fits))


def check_request(artifacts: Iterable[Path], platforms: Iterable[Platform] | None = None, *,
                  partition: str | None = None, env: dict[str, str] | None = None) -> None:
    """Refuse an impossible request before anything is built or pushed."""
    check_placeable(needs_of(artifacts, platforms), nodes(partition, env=env), partition)


# --- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    name: str
    key: str
    state: str
    node: str
    start: float | None
    end: float | None
    restarts: int
    exit_code: int | None
    reason: str


def squeue_seconds(value: object) -> float | None:
    """A time field of ``squeue --json``, in epoch seconds; None when unset or zero."""
    if isinstance(value, dict):  # later versions wrap numbers as {"set": .., "number": ..}
        value = value.get("number") if value.get("set", True) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def queue(*, env: dict[str, str] | None = None) -> list[QueuedJob]:
    """Every job the controller still knows (``--states=all``: finished ones stay for MinJobAge)."""
    proc = _run(["squeue", "--json", "--states=all"], env=env)
    if proc.returncode != 0:
        raise SlurmError(f"squeue: {proc.stderr.strip() or 'failed'} (is slurmctld up? SLURM_CONF?)")
    out = []
    for j in json.loads(proc.stdout).get("jobs", []):
        state = j.get("job_state")
        state = state[0] if isinstance(state, list) and state else state
        code = j.get("exit_code")
        out.append(QueuedJob(str(j.get("job_id")), j.get("name", ""), j.get("comment", "") or "", str(state),
                             j.get("nodes", "") or "", squeue_seconds(j.get("start_time")), squeue_seconds(j.get("end_time")),
                             int(j.get("restart_cnt") or 0), code if isinstance(code, int) else None,
                             j.get("state_reason", "") or ""))
    return out


def jobcomp_records(*, env: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Completion records of jobcomp/filetxt (job id → fields), when the cluster keeps them in a readable file."""
    proc = _run(["scontrol", "show", "config"], env=env)
    conf = dict(line.split("=", 1) for line in (l.replace(" ", "") for l in proc.stdout.splitlines()) if "=" in line)
    if conf.get("JobCompType") != "jobcomp/filetxt":
        return {}
    path = Path(conf.get("JobCompLoc", ""))
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            out[fields["JobId"]] = fields
    return out


# --- submission ----------------------------------------------------------------------------


def job_script(spec: JobSpec, job_dir: Path) -> str:
    """The batch script: the board's name comes from Slurm at run time; everything else is in job.json."""
    return (
        "#!/bin/bash\n"
        f"# request-pack farm job {spec.name} (key {spec.key}): {spec.artifact} on {spec.platform}, {spec.stage} stage\n"
        "set -u\n"
        'echo "request-pack farm: job ${SLURM_JOB_ID:-?} on board ${SLURMD_NODENAME:-?}, restart ${SLURM_RESTART_COUNT:-0}"\n'
        f"exec {shlex.quote(spec.python)} -m packager.farm.node {shlex.quote(str(job_dir / JOB_NAME))}\n"
    )


def sbatch_argv(job: FarmJob, job_dir: Path, partition: str | None) -> list[str]:
    constraint = "&".join([job.arch_feature, *job.devices.features])
    argv = ["sbatch", "--parsable", f"--job-name={job.name}", f"--comment={job.key}", f"--constraint={constraint}",
            "--requeue", "--dependency=singleton", "--nodes=1", "--ntasks=1", f"--chdir={job_dir}",
            f"--output={job_dir / 'slurm-%j.out'}", "--export=ALL,REQUEST_PACK_FARM_KEY=" + job.key]
    if job.devices.gpus:
        argv.append(f"--gres=gpu:{job.devices.gpus}")
    if partition:
        argv.append(f"--partition={partition}")
    return argv + [str(job_dir / SCRIPT_NAME)]


def submit(
    jobs: Sequence[FarmJob],
    *,
    results: Path,
    dataset: Path,
    build_root: Path | None = None,
    signing_key: Path | None = None,
    partition: str | None = None,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> list[Submission]:
    """Steps 1-4 of the module doc for each job; the placement check covers all jobs before any is submitted."""
    if not dataset.is_dir():
        raise BadInput("dataset directory does not exist", file=dataset, field="--dataset")
    if signing_key is not None and not signing_key.is_file():
        raise BadInput("no such signing key", file=signing_key, field="--key")
    offered = nodes(partition, env=env)
    check_placeable(jobs, offered, partition)
    live = {q.key: q for q in queue(env=env) if q.state in LIVE_STATES and q.key}
    results.mkdir(parents=True, exist_ok=True)
    out: list[Submission] = []
    for job in jobs:
        job_dir = (results / job.key).resolve()
        job_dir.mkdir(exist_ok=True)
        if done_record(job_dir) is not None:
            log.info("%s: verified result exists; not submitted", job.name)
            out.append(Submission(job, job_dir, "done", None))
            continue
        if job.key in live:
            log.info("%s: job %s is %s; not submitted again", job.name, live[job.key].job_id, live[job.key].state)
            out.append(Submission(job, job_dir, "queued", live[job.key].job_id))
            continue
        root = build_root or default_build_root(job.artifact_dir)
        spec = JobSpec.of(job, dataset=dataset, build_root=root, signing_key=signing_key,
                          python=python or sys.executable)
        spec.dump(job_dir / JOB_NAME)
        (job_dir / SCRIPT_NAME).write_text(job_script(spec, job_dir))
        (job_dir / SCRIPT_NAME).chmod(0o755)
        argv = sbatch_argv(job, job_dir, partition)
        proc = _run(argv, env=env)
        if proc.returncode != 0:
            msg = proc.stderr.strip().removeprefix("sbatch: error: ")
            if "configuration is not available" in msg or "Invalid feature" in msg or "Invalid generic resource" in msg:
                raise UnplaceableJob(f"{job.artifact} on {job.platform}: sbatch refused it: {msg}", field="--platform")
            raise SlurmError(f"sbatch for {job.name}: {msg or 'failed'}")
        job_id = proc.stdout.strip().split(";")[0]
        append_line(job_dir / SUBMISSIONS_NAME, {"job_id": job_id, "time": now(), "argv": argv})
        log.info("%s: submitted as job %s", job.name, job_id)
        out.append(Submission(job, job_dir, "submitted", job_id))
    return out


# --- status ------------------------------------------------------------------------------


def status(results: Path, *, env: dict[str, str] | None = None) -> list[JobStatus]:
    """One row per key in ``results``: Slurm's view of its last job, and the results directory's."""
    if not results.is_dir():
        raise BadInput("no such results directory", file=results, field="--results")
    try:
        by_id = {q.job_id: q for q in queue(env=env)}
        comp = jobcomp_records(env=env)
    except (SlurmError, EnvironmentMissing) as e:
        log.warning("no scheduler view (%s); showing the results directory only", e)
        by_id, comp = {}, {}
    rows = []
    for job_dir in job_dirs(results):
        spec = JobSpec.load(job_dir / JOB_NAME)
        subs = read_lines(job_dir / SUBMISSIONS_NAME)
        attempts = read_lines(job_dir / ATTEMPTS_NAME)
        job_id = subs[-1]["job_id"] if subs else None
        q = by_id.get(job_id) if job_id else None
        state, node, elapsed, restarts = "unknown", "", None, 0
        if q is not None:
            state, node, restarts = q.state, q.node, q.restarts
            if q.start:
                # A running job's end_time is its limit (far away when unlimited), not an end.
                ended = q.end if q.state not in LIVE_STATES and q.end and q.end >= q.start else None
                elapsed = (ended or time.time()) - q.start
        elif job_id in comp:
            c = comp[job_id]
            state, node = c.get("JobState", "unknown"), c.get("NodeList", "")
        starts = [a for a in attempts if a["event"] == "start"]
        if not node and starts:
            node = starts[-1]["node"]
        rows.append(JobStatus(spec.key, spec.name, spec.artifact, spec.platform, job_id, state, node, elapsed,
                              progress(job_dir), restarts, len(starts), done_record(job_dir) is not None))
    return rows


def wait(results: Path, *, timeout: float, env: dict[str, str] | None = None, poll: float = 2.0) -> list[JobStatus]:
    """Until no job of ``results`` is live in the queue; raises SlurmError with the table's states on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        rows = status(results, env=env)
        if not any(r.state in LIVE_STATES for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise SlurmError(f"jobs still live after {timeout:.0f} s: "
                             + ", ".join(f"{r.name}={r.state}" for r in rows if r.state in LIVE_STATES))
        time.sleep(poll)


@dataclass(frozen=True)
class SlurmFarm(Farm):
    """Boards under Slurm: each evaluates, signs and verifies its own bundle in ``RESULTS/<key>/``."""

    scheduler: ClassVar[str] = "slurm"

    def check(self, artifacts: Sequence[Path], platforms: Sequence[Platform] | None) -> None:
        if self.options.dry_run:
            raise BadInput("--dry-run is for --scheduler kubernetes; Slurm's own check is sbatch --test-only",
                           field="--dry-run")
        check_request(artifacts, platforms, partition=self.options.partition)

    @property
    def dataset(self) -> Path:
        return self.options.dataset or default_sample_dataset()

    def submit(self, jobs: Sequence[FarmJob]) -> list[Submission]:
        o = self.options
        return submit(jobs, results=o.results, dataset=self.dataset, build_root=o.build_root, signing_key=o.key,
                      partition=o.partition)

    def status(self) -> list[JobStatus]:
        return status(self.options.results)

    def collect(self, board_url: str, *, labels: Path | None = None) -> Iterator[Collected]:
        from packager.farm.collect import collect_iter

        self.options.refuse(("jobs", "key", "dataset", "artifacts", "build_root"),
                            "only for --scheduler kubernetes: Slurm boards seal their own bundles")
        return collect_iter(self.options.results, board_url, self.options.trust_store(), labels=labels)
