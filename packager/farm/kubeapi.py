"""The Kubernetes API server, through the official client: create the Jobs ``submit`` wrote, and read their states.

``apply_jobs`` loads the kubeconfig (else the pod's service account), refuses a Job
no node could ever take (labels, allocatable device resources) before creating
anything, and reports a Job that exists already (409) as submitted, never a second
run. ``job_states`` lists the farm's Jobs by label for ``farm status``. An
unreachable or refusing server is ``ClusterUnavailable`` with the API's own message.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from packager.errors import BadInput, ClusterUnavailable, ToolMissing
from packager.farm.base import JobStatus
from packager.farm.kubejobs import LABEL_PREFIX, MANAGED_BY, kube_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    name: str
    outcome: Literal["created", "exists"]


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
    c = kube_client()
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


def job_states(namespace: str, results: Path | None = None, *, timeout_s: float = 20.0) -> list[JobStatus]:
    """The farm's Jobs in ``namespace`` as the API server reports them; with ``results`` (their outputs
    copied off the claim), how far each got and whether it is sealed."""
    from packager.farm.store import done_record, progress

    _load_config()
    c = kube_client()
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
