"""Kubernetes as a farm: the Jobs of a batch of ``FarmJob``s submitted, and their outputs sealed and collected.

``submit`` renders one batch/v1 Job per job (``farm/kubejobs.py``, whose doc says
what a pod does and how it differs from ``evaluate`` on one machine) and the
deny-all NetworkPolicy, writes them as YAML, and without ``dry_run`` creates them
(``farm/kubeapi.py``). The Job's ``metadata.name`` is ``FarmJob.name``, which ends
with the idempotency key's prefix: creating a job twice is a 409 AlreadyExists,
reported as "already submitted", never a second run.

Nothing in a pod signs. After the pods, ``seal`` does outside the cluster what
evaluate does after its stages (``min_top1`` of the job's platform, the image
against the local build record, bundle, sign, verify), and ``collect_iter`` seals
and publishes every Job whose outputs were copied off the results claim.

Idempotency holds while the Job object exists (``ttlSecondsAfterFinished``, a
week by default); a job resubmitted after that finds its predictions on the
claim and, with ``--resume``, infers nothing again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import yaml

from packager.errors import (
    BadInput,
    ImageMismatch,
    RequestPackError,
    SchemaError,
    StageFailed,
)
from packager.farm.base import Collected, Farm, JobStatus, Submission
from packager.farm.jobs import FarmJob
from packager.farm.kubeapi import Applied, apply_jobs, job_states, unschedulable  # noqa: F401  (importers of kubernetes)
from packager.farm.kubejobs import (  # noqa: F401  (importers of kubernetes)
    DEFAULT_DATASET_CLAIM,
    DEFAULT_NAMESPACE,
    DEFAULT_RESULTS_CLAIM,
    LABEL_PREFIX,
    NETWORK_POLICY_FILE,
    NETWORK_POLICY_NAME,
    KubeOptions,
    harness_args,
    network_policy,
    render,
    to_dict,
    write_yaml,
)
from packager.platforms import Platform
from packager.repo import default_sample_dataset

if TYPE_CHECKING:
    from packager.bundle.keys import TrustStore

log = logging.getLogger(__name__)


def submit(jobs: list[FarmJob], *, out: Path, dry_run: bool, namespace: str = DEFAULT_NAMESPACE,
           results_claim: str = DEFAULT_RESULTS_CLAIM, dataset_claim: str = DEFAULT_DATASET_CLAIM,
           fpga_resource: str | None = None, accelerator_resource: str | None = None,
           backoff_limit: int = 3) -> list[Path]:
    """Write one Job YAML per job (``<job name>.job.yaml``) and the deny-all NetworkPolicy into ``out``;
    without ``dry_run`` create them in ``namespace``. Returns the Jobs' paths."""
    opts = KubeOptions(namespace=namespace, results_claim=results_claim, dataset_claim=dataset_claim,
                       fpga_resource=fpga_resource, accelerator_resource=accelerator_resource,
                       backoff_limit=backoff_limit)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise BadInput(f"the same job twice: {', '.join(dup)}", field="ARTIFACT")
    rendered = [render(j, opts) for j in jobs]  # every error before any file is written
    out = Path(out)
    paths = [write_yaml(r, out / f"{j.name}.job.yaml") for j, r in zip(jobs, rendered)]
    policy = write_yaml(network_policy(opts), out / NETWORK_POLICY_FILE)
    log.info("wrote %d Job(s) and %s to %s", len(paths), policy.name, out)
    if not dry_run:
        applied = apply_jobs([policy, *paths], namespace)
        created = sum(1 for a in applied if a.outcome == "created" and a.name != NETWORK_POLICY_NAME)
        log.info("%d Job(s) created, %d already submitted", created,
                 sum(1 for a in applied if a.outcome == "exists" and a.name != NETWORK_POLICY_NAME))
    return paths


# --- after the pods -------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenJob:
    """What ``seal`` and ``farm collect`` read back from a Job YAML that ``submit`` wrote."""

    path: Path
    name: str
    manifest_digest: str
    platform: Platform
    image_digest: str
    stages: tuple[str, ...]  # init containers first: the order the pod runs them

    @classmethod
    def load(cls, path: Path) -> "WrittenJob":
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise BadInput(f"cannot read the Job: {str(e).splitlines()[0]}", file=path) from None
        if not isinstance(doc, dict) or doc.get("kind") != "Job":
            raise BadInput("not a Job written by farm submit --scheduler kubernetes", file=path)
        try:
            notes = doc["metadata"].get("annotations") or {}
            pod = doc["spec"]["template"]["spec"]
            return cls(Path(path), doc["metadata"]["name"], notes[f"{LABEL_PREFIX}/manifest-sha256"],
                       Platform.parse(notes[f"{LABEL_PREFIX}/platform"]),
                       notes[f"{LABEL_PREFIX}/image"].rsplit("@", 1)[1],
                       tuple(c["name"] for c in pod.get("initContainers", []) + pod["containers"]))
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise BadInput(f"not a Job written by farm submit --scheduler kubernetes (missing or bad {e})",
                           file=path) from None

    def pending_stage(self, results: Path) -> str | None:
        """The first stage with no metrics.json under ``results/<name>/``: the pod has not finished it
        (still running, failed, or its outputs not copied off the claim yet)."""
        from packager.results import METRICS_NAME

        return next((s for s in self.stages if not (Path(results) / self.name / s / METRICS_NAME).is_file()), None)


def job_files(jobs_dir: Path) -> list[Path]:
    """The Job YAMLs ``submit`` wrote into ``jobs_dir`` (its NetworkPolicy is not a job)."""
    if not Path(jobs_dir).is_dir():
        raise BadInput("no such directory of Job YAMLs (the --results given to farm submit --scheduler kubernetes)",
                       file=jobs_dir, field="--jobs")
    found = sorted(Path(jobs_dir).glob("*.job.yaml"))
    if not found:
        raise BadInput("no *.job.yaml here: give the directory farm submit --scheduler kubernetes wrote",
                       file=jobs_dir, field="--jobs")
    return found


def seal(job_file: Path, results: Path, *, artifact_dir: Path, dataset: Path, key: Path | None = None,
         build_root: Path | None = None) -> Path:
    """Bundle, sign and verify the outputs of the Job written at ``job_file``, copied off the results
    claim to ``results/<job name>/<stage>``; returns the ``.bundle.tar.gz`` beside the stages.

    What evaluate does after its stages, outside the cluster: every stage's top-1 against the
    manifest's ``min_top1``, the Job's image against the local build record, then
    ``pipeline.seal`` of the last stage. Last, the farm's done marker (``store.DONE_NAME``, the
    bundle's sha256): while it matches the bundle, sealing again returns the bundle as it is, so a
    bundle already published is never replaced by another.
    """
    import json

    from pydantic import ValidationError

    from packager.cache import sha256_digest
    from packager.farm.store import DONE_NAME, done_record, now, write_atomic
    from packager.manifest import load_manifest
    from packager.pipeline import bundle_name, check_min_top1
    from packager.pipeline import seal as seal_stage
    from packager.results import METRICS_NAME, Metrics
    from packager.run.runner import image_from_record

    job = WrittenJob.load(job_file)
    manifest = load_manifest(artifact_dir)
    if job.manifest_digest != manifest.digest():
        raise BadInput(f"the Job was planned from another request.yaml than {artifact_dir}'s", file=job_file,
                       field=f"metadata.annotations.{LABEL_PREFIX}/manifest-sha256")
    job_dir = Path(results) / job.name
    last = job.stages[-1]
    archive = job_dir / bundle_name(manifest.name, job.platform, last)
    done = done_record(job_dir)
    if done is not None and done.get("bundle") == archive.name:
        log.info("%s: already sealed (%s); not redone", job.name, archive)
        return archive
    pending = job.pending_stage(results)
    if pending is not None:
        raise StageFailed(pending, f"no {job_dir / pending / METRICS_NAME}: the pod has not finished this stage")
    for stage in job.stages:
        try:
            top1 = Metrics.model_validate_json((job_dir / stage / METRICS_NAME).read_bytes()).accuracy.top1
        except ValidationError as e:
            raise SchemaError(f"{job_dir / stage / METRICS_NAME}: not the harness's metrics.json: "
                              f"{e.error_count()} error(s), first: {e.errors()[0]['loc']} {e.errors()[0]['msg']}") from None
        check_min_top1(manifest, stage, top1, job.platform)
    ref = image_from_record(artifact_dir, manifest.name, job.platform, build_root)
    if ref.index_digest != job.image_digest:
        raise ImageMismatch(f"the Job ran image {job.image_digest}, the build record {ref.record} names {ref.index_digest}")
    sealed = seal_stage(Path(artifact_dir), ref, dataset, manifest.dataset.labels, job_dir / last, archive, key=key,
                        build_root=build_root)
    write_atomic(job_dir / DONE_NAME, json.dumps({
        "bundle": archive.name, "bundle_sha256": sha256_digest(archive), "job": job.name, "platform": str(job.platform),
        "image_digest": job.image_digest, "keyid": sealed.keyid,
        "verify_seconds": round(sealed.verify_seconds, 3), "time": now()}, indent=2, sort_keys=True) + "\n")
    log.info("sealed %s: %s", job.name, archive)
    return archive


@dataclass(frozen=True)
class KubernetesFarm(Farm):
    """Kubernetes Jobs whose pods run the harness only; ``collect`` seals their outputs here first."""

    scheduler: ClassVar[str] = "kubernetes"
    failures: ClassVar[str] = "job(s) or bundle(s) failed their checks"

    @property
    def dataset(self) -> Path | None:
        # The pods mount their own dataset claim: without --dataset the key cannot cover it.
        return self.options.dataset

    def submit(self, jobs: Sequence[FarmJob]) -> list[Submission]:
        o = self.options
        paths = submit(list(jobs), out=o.results, dry_run=o.dry_run, namespace=o.namespace,
                       fpga_resource=o.fpga_resource, accelerator_resource=o.accelerator_resource)
        return [Submission(job, path, "written" if o.dry_run else "applied") for job, path in zip(jobs, paths)]

    def status(self) -> list[JobStatus]:
        return job_states(self.options.namespace, self.options.results)

    def collect(self, board_url: str, *, labels: Path | None = None) -> Iterator[Collected]:

        o = self.options
        if o.jobs is None:
            raise BadInput("--scheduler kubernetes needs --jobs: the directory of *.job.yaml farm submit wrote",
                           field="--jobs")
        return collect_iter(o.jobs, o.results, board_url, o.trust_store(), artifacts=o.artifacts or (Path("artifacts"),),
                                       dataset=o.dataset or default_sample_dataset(), key=o.key,
                                       build_root=o.build_root, labels=labels)


# --- collecting ------------------------------------------------------------------------------------


def _unsealed(job_dir: Path) -> str:
    return "a bundle without the seal's done marker (sealing was cut short, or the bundle changed since)"


def collect_iter(jobs: Path, results: Path, board_url: str, trust: TrustStore, *, artifacts: Sequence[Path],
                 dataset: Path, key: Path | None = None, build_root: Path | None = None,
                 labels: Path | None = None) -> Iterator[Collected]:
    """Each Job YAML in ``jobs``: its outputs under ``results/<job name>/`` sealed unless sealed already,
    then verified with ``trust`` and published; a Job with a stage unfinished is reported missing, one
    whose checks or seal fail is reported bad, with the reason."""
    from packager.farm.collect import find_artifacts, publish_dir
    from packager.farm.store import bundles, done_record
    from packager.pipeline import evaluator_key
    from packager.scoreboard.store import Board

    # Every argument checked before anything is signed or published.
    files = job_files(jobs)
    if not results.is_dir():
        raise BadInput("no such results directory (the Jobs' outputs copied off the results claim)", file=results,
                       field="--results")
    if not dataset.is_dir():
        raise BadInput("no such dataset directory (the one the pods read)", file=dataset, field="--dataset")
    evaluator_key(key)
    by_digest = find_artifacts(artifacts)
    with Board(board_url) as board:
        for job_file in files:
            try:
                job = WrittenJob.load(job_file)
            except BadInput as e:
                yield Collected(job_file, None, "bad", f"{type(e).__name__}: {e}")
                continue
            job_dir = results / job.name
            sealed = False
            if done_record(job_dir) is None and not bundles(job_dir):
                pending = job.pending_stage(results)
                if pending is not None:
                    where = "no outputs" if not job_dir.is_dir() else f"stage {pending!r} has no metrics.json"
                    yield Collected(job_dir, None, "missing",
                                    f"{job_file.name}: {where} (pod not finished, or not copied off the claim)")
                    continue
                artifact_dir = by_digest.get(job.manifest_digest)
                if artifact_dir is None:
                    yield Collected(job_dir, None, "bad", f"{job_file.name}: no artifact under "
                                    f"{', '.join(map(str, artifacts))} has the request.yaml it was planned from "
                                    f"(sha256 {job.manifest_digest[:16]}…)")
                    continue
                try:
                    seal(job_file, results, artifact_dir=artifact_dir, dataset=dataset, key=key,
                             build_root=build_root)
                except RequestPackError as e:  # a failed check, or this job's build record missing: the others go on
                    log.warning("%s: %s", job_file, e)
                    yield Collected(job_dir, None, "bad", f"{job_file.name}: {type(e).__name__}: {e}")
                    continue
                sealed = True
            yield from publish_dir(board, job_dir, trust, labels, unconfirmed=_unsealed, sealed=sealed)
