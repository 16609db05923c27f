"""Podman (containers-storage), through its CLI; the layout goes in with skopeo like docker's."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import EngineUnavailable
from ..platforms import Platform
from . import Engine, RunResult, need, run, skopeo_copy


class Podman(Engine):
    name = "podman"
    tool = "podman"

    def __init__(self) -> None:
        self.bin = need(self.tool, self.tool)
        # Debian 12's crun refuses hosts with hybrid cgroups; runc (docker's) runs there.
        self.runtime = ["--runtime", "runc"] if self.tool == "podman" and shutil.which("runc") else []

    def version(self) -> str:
        res = run([self.bin, "version", "--format", "{{.Client.Version}}"], check=False)
        if res.returncode != 0:
            raise EngineUnavailable(f"{self.tool} does not work: {res.stderr.strip()[-300:]}", fix=f"apt-get install -y {self.tool}")
        return res.stdout.strip()

    def load(self, layout: Path, tag: str, platform: Platform, ref: str) -> str:
        self.version()
        skopeo_copy(f"oci:{layout}:{tag}", f"containers-storage:{ref}", platform)
        image = self.image_id(ref)
        if image is None:
            raise EngineUnavailable(f"{self.tool} does not show {ref} after loading it")
        return image

    def image_id(self, ref: str) -> str | None:
        res = run([need("podman", "podman"), "image", "inspect", "--format", "{{.Id}}", ref], check=False)
        out = res.stdout.strip()
        if res.returncode != 0 or not out:
            return None
        return out if out.startswith("sha256:") else f"sha256:{out}"

    def run(self, image: str, argv: list[str], *, platform: Platform, entrypoint: str | None = None,
            timeout: float = 600) -> RunResult:
        # podman's default nofile limit (1M) is above what many hosts grant root in a sandbox.
        cmd = [self.bin, *self.runtime, "run", "--rm", "--network", "none", "--pull", "never",
               "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
        if entrypoint is not None:
            cmd += ["--entrypoint", entrypoint]
        return run(cmd + [image, *argv], check=False, timeout=timeout)

    def remove(self, ref: str) -> None:
        run([need("podman", "podman"), "image", "rm", ref], check=False)
