"""The results location of a farm: one directory per idempotency key, shared by submitter and boards.

``RESULTS/<key>/`` holds what the submitter wrote (``job.json``, the job script,
``submissions.jsonl``), what the board's ``request-pack evaluate --out`` wrote
(``functional/``, ``full/``, the signed bundle), ``attempts.jsonl`` (one line per
start and end of an attempt, with the board and Slurm's restart count) and, last,
``done.json``: written only after the bundle was verified, naming the bundle's
sha256. A key with a valid ``done.json`` is finished; nothing runs it again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from packager.cache import sha256_digest
from packager.farm.jobs import FarmJob
from packager.results import PREDICTIONS_NAME

JOB_NAME = "job.json"
SCRIPT_NAME = "job.sh"
DONE_NAME = "done.json"
ATTEMPTS_NAME = "attempts.jsonl"
SUBMISSIONS_NAME = "submissions.jsonl"
BUNDLE_GLOB = "*.bundle.tar.gz"


@dataclass(frozen=True)
class JobSpec:
    """What a board needs to run one job; written by the submitter as ``job.json``."""

    key: str
    name: str
    artifact: str
    artifact_dir: str
    platform: str
    stage: str
    image: str
    gpus: int
    features: tuple[str, ...]
    dataset: str
    build_root: str
    signing_key: str | None
    python: str
    run_config: str = ""  # a sweep point's run-time knobs (canonical JSON), given to evaluate as --set run.KNOB=VALUE

    @classmethod
    def of(cls, job: FarmJob, *, dataset: Path, build_root: Path, signing_key: Path | None, python: str) -> "JobSpec":
        return cls(job.key, job.name, job.artifact, str(job.artifact_dir), job.platform.value, job.stage, job.image,
                   job.devices.gpus, (job.arch_feature, *job.devices.features), str(dataset.resolve()),
                   str(build_root.resolve()), str(signing_key.resolve()) if signing_key else None, python,
                   job.run_config)

    @classmethod
    def load(cls, path: Path) -> "JobSpec":
        data = json.loads(path.read_text())
        data["features"] = tuple(data["features"])
        return cls(**data)

    def dump(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """A reader sees the old file or the whole new one, never a torn one (rename is atomic)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_line(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed attempt
    return out


def done_record(job_dir: Path) -> dict | None:
    """The done marker if it is valid: it names a bundle that still has the sha256 it had when verified."""
    marker = job_dir / DONE_NAME
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
        bundle = job_dir / done["bundle"]
        if bundle.is_file() and sha256_digest(bundle) == done["bundle_sha256"]:
            return done
    except (json.JSONDecodeError, KeyError, OSError):
        pass
    return None


def progress(job_dir: Path) -> str:
    """How far a job got, as its directory shows: done, signed, ``<stage> <predictions>``, image or queued."""
    if done_record(job_dir) is not None:
        return "done"
    if bundles(job_dir):
        return "signed"
    for stage in ("full", "functional"):
        preds = job_dir / stage / PREDICTIONS_NAME
        if preds.is_file():
            with preds.open("rb") as f:
                return f"{stage} {sum(1 for _ in f)}"
    return "queued" if not read_lines(job_dir / ATTEMPTS_NAME) else "image"


def bundles(job_dir: Path) -> list[Path]:
    return sorted(job_dir.glob(BUNDLE_GLOB))


def job_dirs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob(f"*/{JOB_NAME}"))


def now() -> float:
    return round(time.time(), 3)
