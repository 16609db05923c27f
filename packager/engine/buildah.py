"""Buildah shares podman's containers-storage (loading and inspecting are podman's); it runs a
command in a working container (``buildah from`` + ``buildah run``). That is no sandbox: no
read-only root, no capability or device control, so a sandboxed run asks for podman instead.
Isolation is OCI with runc (chroot isolation cannot cut the network, and Debian 12's crun
refuses hybrid cgroup hosts)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from packager.engine.base import Container, ContainerSpec
from packager.engine.podman import Podman
from packager.errors import BuildFailed, EngineUnavailable
from packager.tools import need


class BuildahContainer(Container):
    """``buildah run`` in the foreground: its process is the container; output arrives at exit."""

    def __init__(self, buildah: str, ctr: str, argv: list[str]) -> None:
        self._buildah = buildah
        self.id = ctr
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._lock = threading.Lock()
        self._out: tuple[bytes, bytes] | None = None

    def wait(self, timeout: float | None = None) -> int:
        with self._lock:
            if self._out is None:
                try:
                    self._out = self._proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired as e:
                    self.kill()
                    self._out = self._proc.communicate()
                    raise BuildFailed(f"buildah container {self.id[:12]} timed out after {timeout} s") from e
        return self._proc.returncode

    def logs(self) -> Iterator[bytes]:
        self.wait()
        assert self._out is not None
        yield self._out[0] + self._out[1]

    def logs_all(self, *, stdout: bool = True, stderr: bool = True) -> bytes:
        out, err = self._out or (b"", b"")
        return (out if stdout else b"") + (err if stderr else b"")

    def kill(self) -> None:
        self._proc.kill()

    def remove(self) -> None:
        if self._proc.poll() is None:
            self.kill()
            self._proc.wait()
        subprocess.run([self._buildah, "rm", self.id], capture_output=True)


@dataclass(frozen=True)
class Buildah(Podman):
    name: ClassVar[str] = "buildah"

    @functools.cached_property
    def buildah(self) -> str:
        return need("buildah", "buildah")

    def version(self) -> str:
        res = subprocess.run([self.buildah, "version", "--json"], capture_output=True, text=True)
        if res.returncode != 0:
            raise EngineUnavailable(f"buildah does not work here: {res.stderr.strip()[-300:]}", fix="apt-get install -y buildah")
        return json.loads(res.stdout).get("version", "unknown")

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "version": self.version(), "host": "local", "isolation": "oci (runc)"}

    def start(self, spec: ContainerSpec) -> Container:
        missing = [what for what, asked in (("a read-only root", spec.read_only_rootfs), ("dropped capabilities", spec.cap_drop),
                                            ("devices", spec.devices or spec.cdi_devices or spec.gpus), ("tmpfs", spec.tmpfs))
                   if asked]
        if missing:
            raise EngineUnavailable(f"buildah cannot run the sandbox ({', '.join(missing)})", fix="--engine podman or docker")
        entrypoint = spec.entrypoint
        if entrypoint is None:
            info = self.inspect_image(spec.image)
            entrypoint = info.entrypoint if info else ()
        ctr = subprocess.run([self.buildah, "from", "--pull-never", "--quiet", spec.image], capture_output=True, text=True)
        if ctr.returncode != 0:
            raise EngineUnavailable(f"buildah from {spec.image} failed: {ctr.stderr.strip()[-300:]}")
        cid = ctr.stdout.strip()
        runc = shutil.which("runc")
        if runc is None:
            subprocess.run([self.buildah, "rm", cid], capture_output=True)
            raise EngineUnavailable("buildah needs runc to run a container without network", fix="apt-get install -y runc")
        argv = [self.buildah, "run", "--isolation", "oci", "--runtime", runc, "--network", spec.network]
        if spec.user is not None:
            argv += ["--user", spec.user]
        for k, v in spec.env.items():
            argv += ["--env", f"{k}={v}"]
        for m in spec.mounts:
            if m.kind != "bind":
                raise EngineUnavailable("buildah binds host directories only")
            argv += ["--volume", f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"]
        return BuildahContainer(self.buildah, cid, [*argv, cid, "--", *entrypoint, *spec.command])
