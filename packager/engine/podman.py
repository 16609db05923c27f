"""Podman (containers-storage), through its CLI: the SDK would need ``podman system service`` running.

Images go in with skopeo straight into containers-storage. Podman 4.3 reads
CDI specs itself (from /etc/cdi and /var/run/cdi only), so CDI names pass
through unchanged; it has no ``--gpus`` (GPUs are CDI names there too).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from packager.engine.base import (
    Container,
    ContainerSpec,
    Engine,
    ImageInfo,
    mounts_inside,
    skopeo_copy,
)
from packager.errors import BuildFailed, EngineUnavailable
from packager.platforms import Platform
from packager.tools import need

log = logging.getLogger(__name__)


class CliContainer(Container):
    """A detached container of a CLI engine (podman's ``run -d``)."""

    def __init__(self, argv: tuple[str, ...], cid: str) -> None:
        self._argv = argv
        self.id = cid

    def _cli(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*self._argv, *args], capture_output=True, timeout=timeout)

    def logs(self) -> Iterator[bytes]:
        proc = subprocess.Popen([*self._argv, "logs", "-f", self.id], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        yield from proc.stdout
        proc.wait()

    def logs_all(self, *, stdout: bool = True, stderr: bool = True) -> bytes:
        proc = self._cli("logs", self.id)
        return (proc.stdout if stdout else b"") + (proc.stderr if stderr else b"")

    def wait(self, timeout: float | None = None) -> int:
        try:
            proc = self._cli("wait", self.id, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.kill()
            raise BuildFailed(f"container {self.id[:12]} timed out after {timeout} s") from e
        if proc.returncode != 0:
            raise EngineUnavailable(f"cannot wait for container {self.id[:12]}: {proc.stderr.decode(errors='replace').strip()}")
        return int(proc.stdout.decode().strip().splitlines()[-1])

    def kill(self) -> None:
        self._cli("kill", self.id)

    def remove(self) -> None:
        self._cli("rm", "-f", self.id)


@dataclass(frozen=True)
class Podman(Engine):
    name: ClassVar[str] = "podman"
    # podman 4.3 reads CDI specs from these only (cdi_spec_dirs in containers.conf came later).
    native_cdi_dirs: ClassVar[tuple[Path, ...]] = (Path("/etc/cdi"), Path("/var/run/cdi"))

    @functools.cached_property
    def argv(self) -> tuple[str, ...]:
        exe = need("podman", "podman")
        # Debian 12's crun refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"); runc works.
        return (exe, "--runtime", "runc") if shutil.which("runc") else (exe,)

    def cli(self, *args: str) -> str:
        log.debug("+ %s", " ".join([*self.argv, *args]))
        proc = subprocess.run([*self.argv, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, [*self.argv, *args], proc.stdout, proc.stderr)
        return proc.stdout

    @functools.cached_property
    def _version(self) -> dict:
        try:
            data = json.loads(self.cli("version", "--format", "json"))
        except (subprocess.CalledProcessError, json.JSONDecodeError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise EngineUnavailable(f"podman does not work here: {detail.strip()[-300:]}", fix="apt-get install -y podman") from e
        return data.get("Client", data)

    def version(self) -> str:
        return str(self._version.get("Version"))

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "version": self.version(), "host": "local",
                "runtime": "runc" if "runc" in self.argv else "default"}

    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            data = json.loads(self.cli("image", "inspect", ref))[0]
        except subprocess.CalledProcessError:
            return None
        image_id = data["Id"] if data["Id"].startswith("sha256:") else "sha256:" + data["Id"]
        cfg = data.get("Config") or {}
        return ImageInfo(image_id, data.get("Os", ""), data.get("Architecture", ""), data.get("Variant") or None,
                         int(data.get("Size", 0)), tuple(cfg.get("Env") or ()), dict(cfg.get("Labels") or {}),
                         tuple(cfg.get("Entrypoint") or ()))

    def _store(self, source: str, platform: Platform, ref: str, src_args: tuple[str, ...]) -> None:
        skopeo_copy(source, f"containers-storage:{ref}", platform, extra=src_args)

    def remove_image(self, ref: str) -> None:
        subprocess.run([*self.argv, "image", "rm", ref], capture_output=True)

    def containers_mounting(self, root: Path, label: str) -> list[str]:
        # buildah's working containers are not listed (podman ps --external would): buildah runs in the foreground.
        try:
            ids = self.cli("ps", "-a", "-q", "--no-trunc", "--filter", f"label={label}").split()
            inspected = json.loads(self.cli("container", "inspect", *ids)) if ids else []
        except (subprocess.CalledProcessError, json.JSONDecodeError) as e:
            raise EngineUnavailable(f"podman cannot list its containers: {str(getattr(e, 'stderr', '') or e).strip()[-300:]}") from e
        root = root.resolve()
        return [c["Id"] for c in inspected if mounts_inside(c.get("Mounts"), root)]

    def remove_container(self, cid: str) -> None:
        subprocess.run([*self.argv, "rm", "-f", cid], capture_output=True)

    def start(self, spec: ContainerSpec) -> Container:
        if spec.gpus:
            raise EngineUnavailable("podman has no --gpus", fix="name the GPU by CDI, e.g. --device nvidia.com/gpu=all")
        args = ["run", "-d", "--pull", "never", "--network", spec.network]
        if spec.init:
            args.append("--init")
        if spec.user is not None:
            args += ["--user", spec.user]
        if spec.read_only_rootfs:
            args.append("--read-only")
        for path, opts in spec.tmpfs.items():
            args += ["--tmpfs", f"{path}:{opts}"]
        args += [f"--cap-drop={c}" for c in spec.cap_drop]
        args += [f"--security-opt={o}" for o in spec.security_opt]
        args += [f"--ulimit={k}={v}:{v}" for k, v in spec.ulimits.items()]
        for m in spec.mounts:
            args += ["--mount", f"type={m.kind},source={m.source},target={m.target}" + (",ro=true" if m.read_only else "")]
        args += [f"--device={d}" for d in (*spec.devices, *spec.cdi_devices)]
        args += [f"--group-add={g}" for g in spec.group_add]
        for k, v in spec.env.items():
            args += ["--env", f"{k}={v}"]
        for k, v in spec.labels.items():
            args += ["--label", f"{k}={v}"]
        if spec.pids_limit:
            args += ["--pids-limit", str(spec.pids_limit)]
        if spec.name:
            args += ["--name", spec.name]
        if spec.entrypoint is not None:
            args += ["--entrypoint", json.dumps(list(spec.entrypoint))]
        try:
            cid = self.cli(*args, spec.image, *spec.command).strip().splitlines()[-1]
        except subprocess.CalledProcessError as e:
            raise EngineUnavailable(f"podman could not start the container: {e.stderr.strip()}") from e
        return CliContainer(self.argv, cid)
