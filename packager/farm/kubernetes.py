"""Kubernetes Jobs for a farm: render batch/v1 Jobs from ``FarmJob``s, and apply them where a cluster exists.

Each ``FarmJob`` becomes one Job, built with the official client's models and
serialised by ``ApiClient().sanitize_for_serialization``, so what is written is
what the API server would receive. ``submit`` writes one YAML per job; without
``dry_run`` it creates them through the client (kubeconfig, else in-cluster
config). The Job's ``metadata.name`` is ``FarmJob.name``, which ends with the
idempotency key's prefix: creating a job twice is a 409 AlreadyExists, reported
as "already submitted", never a second run.

What a pod does, and how it differs from ``request-pack evaluate`` on one machine:

1. The pod runs the harness directly in the image (``python3 -m packager.harness``,
   the arguments of ``runner.harness_argv``): a pod has no docker to run a
   container in, so the runner's engine steps (load the image, inspect it, check
   its config digest) are the kubelet's pull **by digest** instead. ``--image-digest``
   is the index digest of the reference (the kubelet picks the platform's manifest
   in it), where a local run records the platform manifest's digest.
2. The model and configuration are the paths the build bakes into every image
   (``contract.MODEL_PATH``, ``contract.CONFIG_PATH``): without an engine nothing can
   read the image's environment before the pod starts.
3. The node is of the job's architecture (``nodeSelector``), so nothing is
   emulated: the scenario sizes are the manifest's, never the QEMU caps a local
   run of a foreign platform applies.
4. The sandbox (``contract.SANDBOX``) is expressed in pod terms: uid/gid 1000,
   non-root, read-only root filesystem, no privilege escalation, all
   capabilities dropped, the runtime's default seccomp profile, no service
   account token, no service links; ``/tmp`` is an ``emptyDir`` of the runner's
   tmpfs size (disk-backed: a memory-backed one would count against a small
   board's RAM); the dataset is a claim mounted read-only at ``/data``; results go
   to a claim at ``/out``, under ``<job name>/<stage>`` as evaluate lays out
   ``OUT/<stage>``. ``network: none`` becomes a NetworkPolicy that denies all
   traffic to and from the farm's pods (written beside the Jobs). Not expressible
   per pod: the nofile/nproc ulimits and the pids limit (kubelet-wide settings).
5. Stage ``all`` runs ``functional`` as an init container before ``full``, so a
   failing functional stage fails the pod before the full stage starts. The
   manifest's ``min_top1`` is **not** enforced in the pod (the harness does not
   know it; evaluate checks it after a stage): ``seal`` does, before signing.
6. The harness always gets ``--resume``: a pod the Job replaces (node lost,
   preempted) continues the predictions.jsonl on the results claim, dropping a
   torn last line; ``podReplacementPolicy: Failed`` keeps two pods from writing
   it at once. Disruptions do not count against ``backoffLimit``; the harness's
   exit codes 2 (bad input) and 3 (missing environment) fail the Job at once.
7. Nothing in the pod signs: the evaluator's key never enters the cluster. The
   stage directories on the claim are unsigned harness outputs; a step outside
   the cluster must copy them off, check ``min_top1``, and bundle, sign and
   verify them as evaluate's step 5 does: ``seal``, which ``farm collect --scheduler
   kubernetes`` calls for every Job whose outputs are there before publishing.

Idempotency holds while the Job object exists (``ttlSecondsAfterFinished``, a
week by default); a job resubmitted after that finds its predictions on the
claim and, with ``--resume``, infers nothing again.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml

from packager.contract import (
    CACHE_MOUNT,
    CONFIG_PATH,
    DATA_MOUNT,
    ENTRYPOINT,
    MODEL_PATH,
    OUT_MOUNT,
    SANDBOX,
    SCRATCH,
    SCRATCH_SIZE_BYTES,
    harness_argv,
)
from packager.contract import RUNNER_UID as CONTAINER_UID
from packager.errors import (
    BadInput,
    ClusterUnavailable,
    ImageMismatch,
    RequestPackError,
    SchemaError,
    StageFailed,
    ToolMissing,
)
from packager.farm.base import Collected, Farm, JobStatus, Submission
from packager.farm.jobs import FarmJob
from packager.platforms import Platform
from packager.repo import default_sample_dataset

if TYPE_CHECKING:
    from packager.bundle.keys import TrustStore

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "request-pack"
DEFAULT_RESULTS_CLAIM = "request-pack-results"
DEFAULT_DATASET_CLAIM = "request-pack-dataset"
# Kubernetes labels a node with its GOARCH only ("arm" for every 32-bit Arm), and
# neither the kubelet nor node-feature-discovery publishes the Arm architecture
# version, so armv7 nodes need a label of ours, set by the cluster's admin
# (kubectl label node, or an NFD local feature file). The value is the OCI variant.
ARCH_LABEL = "kubernetes.io/arch"
VARIANT_LABEL = "request-pack.io/arch-variant"
GPU_RESOURCE = "nvidia.com/gpu"
LABEL_PREFIX = "request-pack.io"
MANAGED_BY = {"app.kubernetes.io/managed-by": "request-pack", "app.kubernetes.io/name": "request-pack-farm"}
NETWORK_POLICY_NAME = "request-pack-farm-deny-all"
NETWORK_POLICY_FILE = f"{NETWORK_POLICY_NAME}.networkpolicy.yaml"
# The harness's exit codes for input it cannot use (2) and an environment it lacks (3):
# retrying on another pod cannot help, so they fail the Job at once.
PERMANENT_EXIT_CODES = (2, 3)
SCRATCH_SIZE = f"{SCRATCH_SIZE_BYTES // 1024**3}Gi"  # the same scratch as the runner's tmpfs
# The preprocessed-tensor cache sits on node disk, not in the scratch: about 150 KB of uint8 crops per
# distinct image, so the 50,000-image validation set needs ~7.3 GiB (the runner binds a host directory).
TENSOR_CACHE_SIZE = "8Gi"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# An extended resource: a domain prefix (not kubernetes.io's) and a name, as device plugins register them.
_RESOURCE = re.compile(r"^(?!(?:[a-z0-9.-]*\.)?kubernetes\.io/)[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class KubeOptions:
    """Cluster-specific names the Jobs refer to; the defaults suit a cluster set up for request-pack."""

    namespace: str = DEFAULT_NAMESPACE
    results_claim: str = DEFAULT_RESULTS_CLAIM
    dataset_claim: str = DEFAULT_DATASET_CLAIM
    # The Xilinx/AMD device plugin names its resource after the card's shell
    # ("xilinx.com/fpga-<shell>-<timestamp>", see `kubectl describe node`), Intel's after the
    # bitstream: there is no name that fits every cluster, so FPGA jobs need one given.
    fpga_resource: str | None = None
    accelerator_resource: str | None = None
    backoff_limit: int = 3
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    active_deadline_seconds: int | None = None

    def __post_init__(self) -> None:
        for field, value in (("--namespace", self.namespace), ("--results-claim", self.results_claim),
                             ("--dataset-claim", self.dataset_claim)):
            if len(value) > 63 or not _DNS_LABEL.match(value):
                raise BadInput(f"{value!r} is not a DNS-1123 label (lower-case alphanumerics and '-', at most 63)", field=field)
        for field, value in (("--fpga-resource", self.fpga_resource), ("--accelerator-resource", self.accelerator_resource)):
            if value is not None and not _RESOURCE.match(value):
                raise BadInput(f"{value!r} is not an extended resource name (vendor-domain/name, e.g. "
                               "xilinx.com/fpga-xilinx_u200_xdma_201830_2-1561465320)", field=field)
        if self.backoff_limit < 0 or self.ttl_seconds_after_finished < 0:
            raise BadInput("backoff limit and TTL must not be negative", field="--backoff-limit")


@dataclass(frozen=True)
class Applied:
    name: str
    outcome: Literal["created", "exists"]


def _client() -> Any:
    try:
        from kubernetes import client
    except ImportError as e:
        raise ToolMissing("the kubernetes Python client is not installed",
                          fix="pip install 'request-pack[kubernetes]'") from e
    return client


# --- rendering --------------------------------------------------------------------------------


def harness_args(job: FarmJob, stage: str) -> list[str]:
    """``runner.harness_argv`` for a pod on a node of the job's own architecture (never emulated)."""
    return harness_argv(config=CONFIG_PATH, model=MODEL_PATH, out=f"{OUT_MOUNT}/{job.name}/{stage}", stage=stage,
                        image_digest=job.image_digest, platform=str(job.platform)) + ["--resume"]


def node_selector(platform: Platform) -> dict[str, str]:
    selector = {ARCH_LABEL: platform.architecture}
    # Only 32-bit Arm is ambiguous (v6, v7); arm64 is always v8 and the kubelet's label says so.
    if platform.architecture == "arm" and platform.variant:
        selector[VARIANT_LABEL] = platform.variant
    return selector


def resource_limits(job: FarmJob, opts: KubeOptions) -> dict[str, str]:
    """Device-plugin resources; requests default to limits for extended resources."""
    limits: dict[str, str] = {}
    if job.devices.gpus:
        limits[GPU_RESOURCE] = str(job.devices.gpus)
    for wanted, resource, flag in ((job.devices.fpga, opts.fpga_resource, "--fpga-resource"),
                                   (job.devices.accelerator, opts.accelerator_resource, "--accelerator-resource")):
        if wanted:
            if resource is None:
                raise BadInput(f"{job.artifact} needs a device its cluster names: give the device plugin's resource "
                               "name (see `kubectl describe node`)", file=job.artifact_dir / "request.yaml", field=flag)
            limits[resource] = "1"
    return limits


def labels(job: FarmJob) -> dict[str, str]:
    # Label values are at most 63 characters: the full key and the platform (slashes) are annotations.
    return {**MANAGED_BY, f"{LABEL_PREFIX}/job": job.name, f"{LABEL_PREFIX}/artifact": _label_value(job.artifact),
            f"{LABEL_PREFIX}/platform": job.platform.slug, f"{LABEL_PREFIX}/stage": job.stage,
            f"{LABEL_PREFIX}/key-prefix": job.key[:16]}


def annotations(job: FarmJob) -> dict[str, str]:
    return {f"{LABEL_PREFIX}/key": job.key, f"{LABEL_PREFIX}/image": job.image,
            f"{LABEL_PREFIX}/manifest-sha256": job.manifest_digest, f"{LABEL_PREFIX}/platform": str(job.platform),
            f"{LABEL_PREFIX}/devices": job.devices.slug,
            f"{LABEL_PREFIX}/results": f"{OUT_MOUNT}/{job.name}"}


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def render(job: FarmJob, opts: KubeOptions = KubeOptions()) -> Any:
    """The ``V1Job`` of one farm job (see the module doc for what the pod does)."""
    if len(job.name) > 63 or not _DNS_LABEL.match(job.name):
        raise BadInput(f"job name {job.name!r} is not a DNS-1123 label", field="name")
    c = _client()
    stages = ("functional", "full") if job.stage == "all" else (job.stage,)
    container_sc = c.V1SecurityContext(
        run_as_non_root=True, run_as_user=CONTAINER_UID, run_as_group=CONTAINER_UID,
        read_only_root_filesystem=bool(SANDBOX["read_only_rootfs"]), allow_privilege_escalation=False,
        privileged=False, capabilities=c.V1Capabilities(drop=list(SANDBOX["cap_drop"])),  # type: ignore[call-overload]
        seccomp_profile=c.V1SeccompProfile(type="RuntimeDefault"))
    mounts = [c.V1VolumeMount(name="dataset", mount_path=DATA_MOUNT, read_only=True),
              c.V1VolumeMount(name="results", mount_path=OUT_MOUNT),
              c.V1VolumeMount(name="scratch", mount_path=SCRATCH),
              c.V1VolumeMount(name="tensor-cache", mount_path=CACHE_MOUNT)]
    limits = resource_limits(job, opts)

    def container(stage: str) -> Any:
        return c.V1Container(
            name=stage, image=job.image, image_pull_policy="IfNotPresent",
            command=list(ENTRYPOINT), args=harness_args(job, stage),
            security_context=container_sc, volume_mounts=mounts,
            resources=c.V1ResourceRequirements(limits=limits) if limits else None,
            termination_message_policy="FallbackToLogsOnError")

    tolerations = [c.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")] if job.devices.gpus else None
    pod = c.V1PodSpec(
        restart_policy="Never",
        automount_service_account_token=False,
        enable_service_links=False,
        node_selector=node_selector(job.platform),
        tolerations=tolerations,
        security_context=c.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=CONTAINER_UID, run_as_group=CONTAINER_UID,
            # fsGroup makes the results claim writable by uid 1000 on volumes that support ownership.
            fs_group=CONTAINER_UID, fs_group_change_policy="OnRootMismatch",
            seccomp_profile=c.V1SeccompProfile(type="RuntimeDefault")),
        init_containers=[container(s) for s in stages[:-1]] or None,
        containers=[container(stages[-1])],
        volumes=[
            c.V1Volume(name="dataset", persistent_volume_claim=c.V1PersistentVolumeClaimVolumeSource(
                claim_name=opts.dataset_claim, read_only=True)),
            c.V1Volume(name="results", persistent_volume_claim=c.V1PersistentVolumeClaimVolumeSource(
                claim_name=opts.results_claim)),
            c.V1Volume(name="scratch", empty_dir=c.V1EmptyDirVolumeSource(size_limit=SCRATCH_SIZE)),
            c.V1Volume(name="tensor-cache", empty_dir=c.V1EmptyDirVolumeSource(size_limit=TENSOR_CACHE_SIZE)),
        ])
    failure_policy = c.V1PodFailurePolicy(rules=[
        # A lost node or a preemption is not the job's fault: retry without spending the backoff.
        c.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            c.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
        c.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=c.V1PodFailurePolicyOnExitCodesRequirement(
            operator="In", values=list(PERMANENT_EXIT_CODES))),
    ])
    meta = c.V1ObjectMeta(name=job.name, namespace=opts.namespace, labels=labels(job), annotations=annotations(job))
    return c.V1Job(
        api_version="batch/v1", kind="Job", metadata=meta,
        spec=c.V1JobSpec(
            backoff_limit=opts.backoff_limit, ttl_seconds_after_finished=opts.ttl_seconds_after_finished,
            active_deadline_seconds=opts.active_deadline_seconds, completions=1, parallelism=1,
            pod_failure_policy=failure_policy, pod_replacement_policy="Failed",
            template=c.V1PodTemplateSpec(
                metadata=c.V1ObjectMeta(labels=labels(job), annotations=annotations(job)), spec=pod)))


def network_policy(opts: KubeOptions = KubeOptions()) -> Any:
    """``network: none`` of the runner's sandbox: no ingress or egress for the farm's pods."""
    c = _client()
    return c.V1NetworkPolicy(
        api_version="networking.k8s.io/v1", kind="NetworkPolicy",
        metadata=c.V1ObjectMeta(name=NETWORK_POLICY_NAME, namespace=opts.namespace, labels=dict(MANAGED_BY)),
        spec=c.V1NetworkPolicySpec(pod_selector=c.V1LabelSelector(match_labels=dict(MANAGED_BY)),
                                   policy_types=["Ingress", "Egress"]))


def to_dict(obj: Any) -> dict:
    """The JSON-ready form the client would send (camelCase keys, no nulls)."""
    c = _client()
    return c.ApiClient().sanitize_for_serialization(obj)


def write_yaml(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False))
    os.replace(tmp, path)
    return path


# --- applying ---------------------------------------------------------------------------------


def _load_config() -> None:
    """kubeconfig ($KUBECONFIG, else ~/.kube/config), else the pod's service account when run in a cluster."""
    try:
        from kubernetes import config
    except ImportError as e:
        raise ToolMissing("the kubernetes Python client is not installed",
                          fix="pip install 'request-pack[kubernetes]'") from e
    # Read at call time: the client computes its default location once, at import.
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    try:
        config.load_kube_config(config_file=path)
        return
    except (config.ConfigException, OSError) as e:
        kube_error = e
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
            return
        except config.ConfigException as e:
            kube_error = e
    first = str(kube_error).strip().splitlines()[0] if str(kube_error).strip() else type(kube_error).__name__
    raise ClusterUnavailable(f"no usable kubeconfig at {path}: {first}",
                             fix="set KUBECONFIG to a cluster's kubeconfig, or use --dry-run")


def unschedulable(job: dict, nodes: list[dict]) -> str | None:
    """Why no node can take the job (labels or allocatable resources), or None when one can."""
    spec = job["spec"]["template"]["spec"]
    selector = spec.get("nodeSelector", {})
    wanted: dict[str, int] = {}
    for ctr in spec.get("initContainers", []) + spec["containers"]:
        for res, qty in (ctr.get("resources", {}).get("limits") or {}).items():
            wanted[res] = max(wanted.get(res, 0), int(qty))
    for node in nodes:
        node_labels = node.get("metadata", {}).get("labels") or {}
        allocatable = node.get("status", {}).get("allocatable") or {}
        if all(node_labels.get(k) == v for k, v in selector.items()) and all(
                _count(allocatable.get(res)) >= n for res, n in wanted.items()):
            return None
    need = ", ".join([f"{k}={v}" for k, v in selector.items()] + [f"{r}>={n}" for r, n in wanted.items()])
    return f"no node of {len(nodes)} has {need}"


def _count(quantity: Any) -> int:
    try:
        return int(str(quantity)) if quantity is not None else 0
    except ValueError:
        return 0


def apply_jobs(paths: list[Path], namespace: str, *, check_nodes: bool = True, timeout_s: float = 20.0) -> list[Applied]:
    """Create the Jobs written at ``paths``; one that exists already (409) is reported, not rerun."""
    _load_config()
    c = _client()
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    batch, core = c.BatchV1Api(), c.CoreV1Api()
    bodies = [yaml.safe_load(p.read_text()) for p in paths]
    timeout = (min(5.0, timeout_s), timeout_s)
    try:
        if check_nodes:
            try:
                nodes = [c.ApiClient().sanitize_for_serialization(n)
                         for n in core.list_node(_request_timeout=timeout).items]
            except ApiException as e:
                if e.status != 403:
                    raise
                log.warning("cannot list nodes (%s); submitting without the placement check", e.reason)
                nodes = None
            if nodes is not None:
                for body in bodies:
                    why = unschedulable(body, nodes)
                    if why:
                        raise BadInput(f"job {body['metadata']['name']} can never be placed: {why}", field="--platform")
        done: list[Applied] = []
        for path, body in zip(paths, bodies):
            name = body["metadata"]["name"]
            try:
                if body["kind"] == "NetworkPolicy":
                    c.NetworkingV1Api().create_namespaced_network_policy(namespace, body, _request_timeout=timeout)
                else:
                    batch.create_namespaced_job(namespace, body, _request_timeout=timeout)
                done.append(Applied(name, "created"))
                log.info("created %s %s/%s from %s", body["kind"], namespace, name, path)
            except ApiException as e:
                if e.status != 409:
                    raise
                done.append(Applied(name, "exists"))
                log.info("%s %s/%s already submitted; not run again", body["kind"], namespace, name)
        return done
    except ApiException as e:
        reason = f"{e.status} {e.reason}".strip()
        if e.status == 404:
            raise ClusterUnavailable(f"namespace {namespace!r} not found ({reason})",
                                     fix=f"kubectl create namespace {namespace}") from e
        if e.status == 422:
            raise BadInput(f"the API server rejected a manifest: {_api_message(e)}", field="spec") from e
        raise ClusterUnavailable(f"Kubernetes API refused the request: {reason}: {_api_message(e)}") from e
    except HTTPError as e:
        raise ClusterUnavailable(f"Kubernetes API server unreachable: {str(e).splitlines()[0]}",
                                 fix="check the kubeconfig's server and the network, or use --dry-run") from e


def _api_message(e: Any) -> str:
    try:
        return str(yaml.safe_load(e.body or "{}").get("message", "")).splitlines()[0]
    except Exception:  # the body is the server's; any shape it has is only for the message
        return ""


# --- submission -----------------------------------------------------------------


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


# --- the farm's view of a cluster -------------------------------------------------------------


def job_states(namespace: str, results: Path | None = None, *, timeout_s: float = 20.0) -> list[JobStatus]:
    """The farm's Jobs in ``namespace`` as the API server reports them; with ``results`` (their outputs
    copied off the claim), how far each got and whether it is sealed."""
    from packager.farm.store import done_record, progress

    _load_config()
    c = _client()
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
    try:
        found = c.BatchV1Api().list_namespaced_job(namespace, label_selector=selector,
                                                   _request_timeout=(min(5.0, timeout_s), timeout_s)).items
    except ApiException as e:
        raise ClusterUnavailable(f"Kubernetes API refused the request: {e.status} {e.reason}: {_api_message(e)}") from e
    except HTTPError as e:
        raise ClusterUnavailable(f"Kubernetes API server unreachable: {str(e).splitlines()[0]}") from e
    rows = []
    for job in sorted(found, key=lambda j: j.metadata.name):
        notes, st = job.metadata.annotations or {}, job.status
        ended = next((cond.type for cond in st.conditions or [] if cond.status == "True"
                      and cond.type in ("Complete", "Failed")), None)
        state = ended or ("Active" if st.active else "Pending")
        start, end = st.start_time, st.completion_time
        elapsed = ((end.timestamp() if end else time.time()) - start.timestamp()) if start else None
        job_dir = Path(results) / job.metadata.name if results is not None else None
        rows.append(JobStatus(
            key=notes.get(f"{LABEL_PREFIX}/key", ""), name=job.metadata.name,
            artifact=(job.metadata.labels or {}).get(f"{LABEL_PREFIX}/artifact", ""),
            platform=notes.get(f"{LABEL_PREFIX}/platform", ""), job_id=job.metadata.uid, state=state, node="",
            elapsed_s=elapsed, stage=progress(job_dir) if job_dir is not None and job_dir.is_dir() else "-",
            restarts=st.failed or 0, attempts=(st.failed or 0) + (st.succeeded or 0) + (st.active or 0),
            verified=job_dir is not None and done_record(job_dir) is not None))
    return rows


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
