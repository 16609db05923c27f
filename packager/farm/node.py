"""What runs on a board inside a Slurm job: ``python -m packager.farm.node RESULTS/<key>/job.json``.

1. A valid done marker means the result exists: exit 0 at once, so a requeue
   (or a second submission) after success never evaluates again.
2. One attempt at a time per key (an exclusive lock on the key's directory,
   besides Slurm's own ``--dependency=singleton`` on the job name).
3. A container left by an earlier attempt of the same key (its job was killed,
   e.g. its board was taken down, but the engine kept the container) is removed
   before anything resumes, so no two writers share ``predictions.jsonl``.
4. ``request-pack evaluate ARTIFACT --image REF --platform P --stage S --resume
   --out RESULTS/<key>/`` runs as a child; on a SIGTERM from Slurm the child gets
   SIGINT and the key's containers are removed at once (the engine, not the job,
   holds them, so Slurm's kill would not reach them).
5. The bundle it wrote is verified again here with the signer's public key and
   only then ``done.json`` is written (atomically), naming the bundle's sha256.

Every start and end is a line of ``attempts.jsonl`` with the board's name
(``$SLURMD_NODENAME``: ``%N`` would give the host, the same for every logical board).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from packager.cache import sha256_digest
from packager.engine import get_engine
from packager.errors import CheckFailed, EngineUnavailable, RequestPackError
from packager.farm.store import (
    ATTEMPTS_NAME,
    DONE_NAME,
    JobSpec,
    append_line,
    bundles,
    done_record,
    now,
    write_atomic,
)

log = logging.getLogger(__name__)
# The label the runner puts on every container it starts (run/runner.py).
RUN_LABEL = "request-pack.run"


def _attempt(job_dir: Path, event: str, **extra: object) -> None:
    append_line(job_dir / ATTEMPTS_NAME, {
        "event": event, "time": now(), "node": os.environ.get("SLURMD_NODENAME", os.uname().nodename),
        "job_id": os.environ.get("SLURM_JOB_ID"), "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")), **extra})


def remove_stale_containers(job_dir: Path, engine: str = "docker") -> list[str]:
    """Step 3: containers of the local engine with a mount inside ``job_dir`` (only an earlier attempt has one)."""
    try:
        eng = get_engine(engine)
        stale = eng.containers_mounting(job_dir, RUN_LABEL)
        for cid in stale:
            log.warning("removing container %s of an earlier attempt", cid[:12])
            eng.remove_container(cid)
    except (EngineUnavailable, OSError) as e:
        log.warning("cannot remove the containers of earlier attempts: %s", e)
        return []
    return stale


def evaluate_argv(spec: JobSpec, job_dir: Path) -> list[str]:
    argv = [spec.python, "-m", "packager.cli", "evaluate", spec.artifact_dir, "--image", spec.image,
            "--platform", spec.platform, "--stage", spec.stage, "--resume", "--out", str(job_dir),
            "--dataset", spec.dataset, "--build-root", spec.build_root]
    if spec.signing_key:
        argv += ["--key", spec.signing_key]
    if spec.run_config:
        for knob, value in json.loads(spec.run_config).items():
            argv += ["--set", f"run.{knob}={value}"]
    return argv


def _verify(spec: JobSpec, job_dir: Path) -> dict:
    """Step 5: the one bundle of this key, verified with the signer's public key."""
    from packager.bundle.keys import TrustStore
    from packager.bundle.verify import verify_bundle
    from packager.pipeline import evaluator_key

    found = bundles(job_dir)
    if len(found) != 1:
        raise CheckFailed(f"{job_dir}: expected one bundle after evaluate, found {len(found)}")
    _, pub = evaluator_key(Path(spec.signing_key) if spec.signing_key else None)
    report = verify_bundle(found[0], TrustStore.load([pub]), dataset=Path(spec.dataset))
    return {"bundle": found[0].name, "bundle_sha256": sha256_digest(found[0]),
            "keyid": report.signer.keyid if report.signer else None, "verify_seconds": round(report.seconds, 3)}


def run_job(job_json: Path) -> int:
    job_dir = job_json.parent
    spec = JobSpec.load(job_json)
    # 1.
    if done_record(job_dir) is not None:
        log.info("%s: result exists (%s); nothing to run", spec.name, DONE_NAME)
        _attempt(job_dir, "skipped", reason="done")
        return 0
    # 2.
    with (job_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done_record(job_dir) is not None:
            _attempt(job_dir, "skipped", reason="done")
            return 0
        _attempt(job_dir, "start")
        # 3.
        stale = remove_stale_containers(job_dir)
        # 4.
        argv = evaluate_argv(spec, job_dir)
        log.info("+ %s", " ".join(argv))
        child = subprocess.Popen(argv)

        def stop(*_: object) -> None:
            # Slurm is ending the job (cancel, requeue, board down): the container lives in the
            # engine, not in the job, so end it now, as a board losing power would.
            child.send_signal(signal.SIGINT)
            remove_stale_containers(job_dir)

        signal.signal(signal.SIGTERM, stop)
        code = child.wait()
        if code != 0:
            _attempt(job_dir, "failed", exit_code=code, removed_containers=stale)
            return code
        # 5.
        try:
            done = _verify(spec, job_dir)
        except RequestPackError as e:
            _attempt(job_dir, "failed", exit_code=e.return_code, error=str(e))
            log.error("%s", e)
            return e.return_code
        done.update(key=spec.key, artifact=spec.artifact, platform=spec.platform, stage=spec.stage, image=spec.image,
                    node=os.environ.get("SLURMD_NODENAME"), job_id=os.environ.get("SLURM_JOB_ID"), time=now())
        write_atomic(job_dir / DONE_NAME, json.dumps(done, indent=2, sort_keys=True) + "\n")
        _attempt(job_dir, "done", exit_code=0, removed_containers=stale)
        return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if len(sys.argv) != 2:
        print("usage: python -m packager.farm.node RESULTS/<key>/job.json", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_job(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
