"""Which host devices a run passes into its container, checked before it starts.

Three mechanisms, as the manifest's ``devices`` and ``--device`` ask:

* device nodes (FPGAs, NPUs, anything under ``/dev``): ``--device HOST[:CONTAINER]``
  plus the node's owning group, so the non-root user of the sandbox may open it;
* CDI names (``vendor.com/class=name``): resolved from CDI spec files. Podman 4.3
  reads specs only from its default directories (``/etc/cdi``, ``/var/run/cdi``;
  it ignores ``cdi_spec_dirs`` in containers.conf) and docker 20.10 has no CDI at
  all, so a name whose spec the engine cannot see natively is resolved here into
  plain device nodes, environment variables and read-only mounts. Specs that need
  OCI hooks cannot be applied that way and are refused with a clear error;
* GPUs without a CDI name: docker's device requests (``--gpus all``).

A required device that is absent raises ``DeviceMissing`` (exit 3) with the fix;
nothing is started. ``DevicePlan.record()`` is what system.json's sandbox keeps.
"""

from __future__ import annotations

import glob
import grp
import json
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packager.errors import BadInput, DeviceMissing
from packager.sections import Device
from packager.yamlsafe import load_yaml

log = logging.getLogger(__name__)

DEFAULT_CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
# Nodes whose presence shows an NVIDIA driver; DRI render nodes for other GPUs.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dri/renderD128")


@dataclass(frozen=True)
class NodeMapping:
    host: str
    container: str
    permissions: str = "rwm"
    via: str = "node"  # "node" (manifest/--device) or "cdi:<name>" when resolved from a spec

    def as_docker(self) -> str:
        return f"{self.host}:{self.container}:{self.permissions}"


@dataclass(frozen=True)
class CdiEdits:
    """What one CDI device adds to a container (the subset we can apply without hooks)."""

    name: str
    spec_file: str
    nodes: tuple[NodeMapping, ...]
    env: tuple[str, ...]
    mounts: tuple[tuple[str, str], ...]  # (host, container), applied read-only


@dataclass(frozen=True)
class DevicePlan:
    nodes: tuple[NodeMapping, ...] = ()
    group_add: tuple[str, ...] = ()
    native_cdi: tuple[str, ...] = ()  # names handed to the engine as-is
    resolved_cdi: tuple[CdiEdits, ...] = ()  # names we turned into nodes/env/mounts
    gpus: bool = False  # docker device request for all GPUs
    env: tuple[str, ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()
    skipped: tuple[str, ...] = field(default=())  # optional devices that were absent

    def record(self) -> dict[str, object]:
        return {
            "nodes": [{"host": n.host, "container": n.container, "permissions": n.permissions, "via": n.via} for n in self.nodes],
            "groups": list(self.group_add),
            "cdi_native": list(self.native_cdi),
            "cdi_resolved": [{"name": c.name, "spec": c.spec_file} for c in self.resolved_cdi],
            "gpus": "all" if self.gpus else None,
            "absent_optional": list(self.skipped),
        }


# --- --device SPEC --------------------------------------------------------------


def parse_device_spec(spec: str) -> Device:
    """``/dev/x[:/dev/y]`` is a node, ``vendor/class=name`` a CDI name, ``gpu`` docker's --gpus all."""
    text = spec.strip()
    if text in ("gpu", "gpus", "gpu=all"):
        return Device(kind="gpu")
    if "=" in text and "/" in text.split("=", 1)[0] and not text.startswith("/"):
        try:
            return Device(kind="gpu" if text.startswith("nvidia.com/gpu") else "accelerator", cdi=[text])
        except ValueError as e:
            raise BadInput(str(e), field="--device") from None
    if text.startswith("/"):
        host = text.split(":", 1)[0]
        try:
            Device(kind="accelerator", nodes=[host])
        except ValueError:
            raise BadInput(f"{text!r} is not a device node under /dev", field="--device") from None
        return Device(kind="accelerator", nodes=[host])
    raise BadInput(f"{spec!r}: expected /dev/NODE[:/dev/NAME], vendor.com/class=name, or gpu", field="--device")


def _node_pairs(spec: str) -> tuple[str, str]:
    host, _, container = spec.partition(":")
    return host, container or host


# --- CDI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _CdiDevice:
    kind: str
    name: str
    spec_file: Path
    edits: dict
    common: dict


def load_cdi_registry(dirs: Sequence[Path]) -> dict[str, _CdiDevice]:
    """Every ``vendor/class=name`` defined by the .json/.yaml specs in ``dirs``; later dirs win, as in the CDI spec."""
    registry: dict[str, _CdiDevice] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(list(d.glob("*.json")) + list(d.glob("*.yaml")) + list(d.glob("*.yml"))):
            data = _load_spec(path)
            kind = data.get("kind")
            if not isinstance(kind, str) or "/" not in kind:
                raise BadInput("CDI spec has no 'vendor/class' kind", file=path, field="kind")
            common = data.get("containerEdits") or {}
            for dev in data.get("devices") or []:
                name = dev.get("name") if isinstance(dev, dict) else None
                if not isinstance(name, str):
                    raise BadInput("CDI device without a name", file=path, field="devices")
                registry[f"{kind}={name}"] = _CdiDevice(kind, name, path, dev.get("containerEdits") or {}, common)
    return registry


def _load_spec(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else load_yaml(path)
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"unreadable CDI spec: {e}", file=path) from None
    if not isinstance(data, dict):
        raise BadInput("CDI spec must be a mapping", file=path)
    return data


def resolve_cdi(name: str, registry: dict[str, _CdiDevice]) -> CdiEdits:
    dev = registry.get(name)
    if dev is None:
        known = ", ".join(sorted(registry)) or "none"
        raise DeviceMissing(f"CDI device {name!r} is not defined by any spec (defined: {known})",
                            fix="install the vendor's CDI spec, or pass --cdi-spec-dir")
    nodes: list[NodeMapping] = []
    env: list[str] = []
    mounts: list[tuple[str, str]] = []
    for edits in (dev.common, dev.edits):
        if edits.get("hooks"):
            raise DeviceMissing(f"CDI device {name!r} needs OCI hooks ({dev.spec_file}), which only a CDI-capable engine can run",
                                fix="use --engine podman with the spec in /etc/cdi or /var/run/cdi")
        for node in edits.get("deviceNodes") or []:
            path = node.get("path")
            if not isinstance(path, str):
                raise BadInput("deviceNodes entry without a path", file=dev.spec_file, field="containerEdits.deviceNodes")
            host = node.get("hostPath") or path
            nodes.append(NodeMapping(host, path, node.get("permissions") or "rwm", via=f"cdi:{name}"))
        env.extend(str(e) for e in edits.get("env") or [])
        for m in edits.get("mounts") or []:
            mounts.append((m["hostPath"], m["containerPath"]))
    return CdiEdits(name, str(dev.spec_file), tuple(nodes), tuple(env), tuple(mounts))


# --- planning ---------------------------------------------------------------------------


def _is_device_node(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _group_of(path: str) -> str:
    return str(os.stat(path).st_gid)


def _check_openable(path: str) -> None:
    """The sandbox user is uid 1000 with the node's group added; a root-only node would fail inside, late."""
    st = os.stat(path)
    if st.st_mode & 0o066 == 0:
        raise DeviceMissing(
            f"{path} is mode {stat.filemode(st.st_mode)} owned by {st.st_uid}:{st.st_gid}: the sandbox's non-root user cannot open it",
            fix=f"give the node a group and mode 0660 (a udev rule with GROUP=..., MODE=\"0660\", or chgrp/chmod {path})")


def _resolve_group(name: str) -> str:
    """A numeric gid is what the kernel checks; names are looked up on the host, which owns the nodes."""
    if name.isdigit():
        return name
    try:
        return str(grp.getgrnam(name).gr_gid)
    except KeyError:
        raise DeviceMissing(f"group {name!r} named by the manifest does not exist on this host",
                            fix=f"groupadd {name}, or name the group by its gid") from None


def gpu_present() -> bool:
    return any(os.path.exists(p) for p in _GPU_NODES) or bool(glob.glob("/dev/nvidia[0-9]*"))


def plan_devices(
    declared: Iterable[Device],
    extra: Iterable[str] = (),
    *,
    cdi_dirs: Sequence[Path] = DEFAULT_CDI_DIRS,
    engine_cdi_dirs: Sequence[Path] = (),
    engine_has_gpu_requests: bool = True,
) -> DevicePlan:
    """Check every device and decide how it is passed; raise DeviceMissing before anything starts.

    ``extra`` are ``--device`` specs; each is required. ``engine_cdi_dirs`` are the
    directories the engine reads CDI specs from by itself (empty for docker 20.10).
    """
    devices = list(declared)
    node_targets: dict[str, str] = {}
    for spec in extra:
        dev = parse_device_spec(spec)
        if dev.nodes:
            host, container = _node_pairs(spec)
            node_targets[host] = container
        devices.append(dev)

    registry = None
    nodes: list[NodeMapping] = []
    groups: list[str] = []
    native: list[str] = []
    resolved: list[CdiEdits] = []
    env: list[str] = []
    mounts: list[tuple[str, str]] = []
    gpus = False
    skipped: list[str] = []

    for dev in devices:
        if dev.kind == "cpu" and not dev.nodes and not dev.cdi:
            continue
        missing = [n for n in dev.nodes if not _is_device_node(n)]
        if dev.kind == "gpu" and not dev.nodes and not dev.cdi and not gpu_present():
            missing.append("a GPU (" + ", ".join(_GPU_NODES) + ")")
        if missing:
            what = f"{dev.kind} device {', '.join(missing)} is not present on this host"
            if dev.required:
                raise DeviceMissing(what, fix="attach the device and load its driver, or mark it required: false")
            log.warning("%s; optional, running without it", what)
            skipped.extend(missing)
            continue
        for n in dev.nodes:
            _check_openable(n)
            nodes.append(NodeMapping(n, node_targets.get(n, n)))
            groups.append(_group_of(n))
        groups.extend(_resolve_group(g) for g in dev.groups)
        if dev.kind == "gpu" and not dev.nodes and not dev.cdi:
            if not engine_has_gpu_requests:
                raise DeviceMissing("this engine has no GPU device requests", fix="name the GPU by CDI, e.g. nvidia.com/gpu=all")
            gpus = True
        for name in dev.cdi:
            if registry is None:
                registry = load_cdi_registry(list(cdi_dirs))
            edits = resolve_cdi(name, registry)
            absent = [n.host for n in edits.nodes if not _is_device_node(n.host)]
            if absent:
                what = f"CDI device {name!r} names {', '.join(absent)}, which is not present"
                if dev.required:
                    raise DeviceMissing(what, fix=f"attach the device or fix {edits.spec_file}")
                skipped.append(name)
                continue
            for n in edits.nodes:
                _check_openable(n.host)
                groups.append(_group_of(n.host))
            spec_dir = Path(edits.spec_file).parent.resolve()
            if any(spec_dir == Path(d).resolve() for d in engine_cdi_dirs):
                native.append(name)
            else:
                resolved.append(edits)
                nodes.extend(edits.nodes)
                env.extend(edits.env)
                mounts.extend(edits.mounts)

    # gid 0 would add root's group to a non-root user; a node owned by root:root needs its mode instead.
    groups = [g for g in dict.fromkeys(groups) if g != "0"]
    plan = DevicePlan(tuple(nodes), tuple(groups), tuple(native), tuple(resolved), gpus, tuple(env), tuple(mounts), tuple(skipped))
    log.debug("device plan: %s", plan.record())
    return plan
