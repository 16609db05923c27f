"""The batch/v1 Job a ``FarmJob`` becomes on Kubernetes, and the NetworkPolicy beside it.

Each ``FarmJob`` becomes one Job (``render``), built with the official client's
models and serialised by ``ApiClient().sanitize_for_serialization``, so what is
written is what the API server would receive. Its ``metadata.name`` is
``FarmJob.name``, a DNS-1123 label that ends with the idempotency key's prefix.

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
   emulated: the scenario sizes are the platform's run settings (its baked
   request.json), never the QEMU caps a local run of a foreign platform applies.
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
   verify them as evaluate's step 5 does: ``kubernetes.seal``, which ``farm collect
   --scheduler kubernetes`` calls for every Job whose outputs are there before publishing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from packager.errors import BadInput, ToolMissing
from packager.farm.jobs import FarmJob
from packager.platforms import Platform

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


def kube_client() -> Any:
    """The official client's ``kubernetes.client`` module; ToolMissing saying how to install it."""
    try:
        from kubernetes import client
    except ImportError as e:
        raise ToolMissing("the kubernetes Python client is not installed",
                          fix="pip install 'request-pack[kubernetes]'") from e
    return client


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
    c = kube_client()
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
    c = kube_client()
    return c.V1NetworkPolicy(
        api_version="networking.k8s.io/v1", kind="NetworkPolicy",
        metadata=c.V1ObjectMeta(name=NETWORK_POLICY_NAME, namespace=opts.namespace, labels=dict(MANAGED_BY)),
        spec=c.V1NetworkPolicySpec(pod_selector=c.V1LabelSelector(match_labels=dict(MANAGED_BY)),
                                   policy_types=["Ingress", "Egress"]))


def to_dict(obj: Any) -> dict:
    """The JSON-ready form the client would send (camelCase keys, no nulls)."""
    c = kube_client()
    return c.ApiClient().sanitize_for_serialization(obj)


def write_yaml(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False))
    os.replace(tmp, path)
    return path
