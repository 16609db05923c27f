"""The one interface the farm's schedulers share: ``Farm`` (submit, status, collect) and what they return.

``jobs.plan`` decides what runs, the same for every scheduler; a ``Farm`` turns those
jobs into its scheduler's submissions, reports on them, and collects their bundles,
verified, onto a board. ``packager.farm.open_farm`` picks the implementation by ``--scheduler``:
``slurm.SlurmFarm`` (boards that evaluate and sign) or ``kubernetes.KubernetesFarm``
(pods that only run the harness; their outputs are sealed at collection).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from packager.errors import BadInput
from packager.farm.jobs import FarmJob
from packager.platforms import Platform

if TYPE_CHECKING:
    from packager.bundle.keys import TrustStore

SCHEDULERS = ("slurm", "kubernetes")


@dataclass(frozen=True)
class FarmOptions:
    """What the farm commands may be given; a scheduler refuses, by option name, what it cannot use."""

    results: Path = Path("farm-results")
    dataset: Path | None = None
    key: Path | None = None
    build_root: Path | None = None
    partition: str | None = None  # Slurm
    dry_run: bool = False  # Kubernetes, and below
    namespace: str = "request-pack"
    fpga_resource: str | None = None
    accelerator_resource: str | None = None
    jobs: Path | None = None
    artifacts: tuple[Path, ...] = ()
    trust: tuple[Path, ...] = ()  # farm collect verifies with these
    trust_dir: Path | None = None

    def refuse(self, names: Iterable[str], why: str) -> None:
        """BadInput naming the first of ``names`` that was given (``build_root`` is ``--build-root``)."""
        for name in names:
            if getattr(self, name):
                raise BadInput(why, field="--" + name.replace("_", "-"))

    def trust_store(self) -> TrustStore:
        from packager.bundle.keys import TrustStore

        return TrustStore.load(self.trust, self.trust_dir)


@dataclass(frozen=True)
class Submission:
    job: FarmJob
    path: Path  # Slurm: the key's results directory; Kubernetes: the Job's YAML
    action: str  # submitted, done (a verified result exists), queued (a live job has the key); written, applied
    job_id: str | None = None


@dataclass(frozen=True)
class JobStatus:
    key: str
    name: str
    artifact: str
    platform: str
    job_id: str | None
    state: str  # the scheduler's word for it
    node: str
    elapsed_s: float | None
    stage: str  # what the results directory shows: queued, functional 3/4, signed, done
    restarts: int
    attempts: int
    verified: bool


@dataclass(frozen=True)
class Collected:
    job_dir: Path
    bundle: Path | None
    outcome: str  # published, present (already on the board), bad (verification failed), missing (no bundle)
    reason: str = ""
    artifact: str = ""
    platform: str = ""
    top1: float | None = None
    bundle_digest: str | None = None
    sealed: bool = False  # signed by this collect (Kubernetes), not by the board

    @property
    def ok(self) -> bool:
        return self.outcome in ("published", "present")


@dataclass(frozen=True)
class Farm(ABC):
    options: FarmOptions
    scheduler: ClassVar[str]
    # How `farm collect` names what failed: the boards' bundles, or the jobs sealed here.
    failures: ClassVar[str] = "bundle(s) failed verification"

    def check(self, artifacts: Sequence[Path], platforms: Sequence[Platform] | None) -> None:
        """Refuse, before any image is built, a request no node could ever run.

        Only a scheduler that can list its nodes' features before a job exists does so here;
        the others check when the jobs are submitted."""

    @property
    @abstractmethod
    def dataset(self) -> Path | None:
        """The dataset the jobs read, part of every job's key; None when the scheduler mounts its own."""

    @abstractmethod
    def submit(self, jobs: Sequence[FarmJob]) -> list[Submission]:
        """Each job handed to the scheduler once: a job whose key is done or live is not submitted again."""

    @abstractmethod
    def status(self) -> list[JobStatus]:
        """One row per job the scheduler (or the results location) knows."""

    @abstractmethod
    def collect(self, board_url: str, *, labels: Path | None = None) -> Iterator[Collected]:
        """Every finished job's bundle verified with the trusted keys and published; the others reported with
        the reason. Options the scheduler cannot use are refused before any key is read or the board opened."""
