"""The docker daemon, through its CLI (``DOCKER_API_VERSION`` selects the API, 1.41 for bookworm's 20.10)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EngineUnavailable
from ..platforms import Platform
from . import Engine, RunResult, need, run, skopeo_copy


class Docker(Engine):
    name = "docker"

    def __init__(self) -> None:
        self.bin = need("docker", "docker.io")
        os.environ.setdefault("DOCKER_API_VERSION", "1.41")

    def version(self) -> str:
        res = run([self.bin, "version", "--format", "{{.Server.Version}}"], check=False)
        if res.returncode != 0 or not res.stdout.strip():
            raise EngineUnavailable(f"docker daemon not reachable: {res.stderr.strip().splitlines()[-1:] or ['no answer']}"[:300],
                                    fix="make setup (starts dockerd)")
        return res.stdout.strip()

    def load(self, layout: Path, tag: str, platform: Platform, ref: str) -> str:
        self.version()
        skopeo_copy(f"oci:{layout}:{tag}", f"docker-daemon:{ref}", platform)
        image = self.image_id(ref)
        if image is None:
            raise EngineUnavailable(f"docker does not show {ref} after loading it")
        return image

    def image_id(self, ref: str) -> str | None:
        res = run([self.bin, "image", "inspect", "--format", "{{.Id}}", ref], check=False)
        return res.stdout.strip() or None if res.returncode == 0 else None

    def run(self, image: str, argv: list[str], *, platform: Platform, entrypoint: str | None = None,
            timeout: float = 600) -> RunResult:
        cmd = [self.bin, "run", "--rm", "--network", "none", "--platform", platform.value]
        if entrypoint is not None:
            cmd += ["--entrypoint", entrypoint]
        return run(cmd + [image, *argv], check=False, timeout=timeout)

    def remove(self, ref: str) -> None:
        run([self.bin, "image", "rm", ref], check=False)
