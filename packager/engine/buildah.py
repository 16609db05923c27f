"""Buildah shares podman's containers-storage; it runs a command in a working container (chroot isolation)."""

from __future__ import annotations

from ..platforms import Platform
from . import RunResult, run
from .podman import Podman


class Buildah(Podman):
    name = "buildah"
    tool = "buildah"

    def version(self) -> str:
        res = run([self.bin, "version", "--json"], check=False)
        if res.returncode != 0:
            return super().version()
        import json

        return json.loads(res.stdout).get("version", "unknown")

    def run(self, image: str, argv: list[str], *, platform: Platform, entrypoint: str | None = None,
            timeout: float = 600) -> RunResult:
        ctr = run([self.bin, "from", "--pull-never", "--quiet", image]).stdout.strip()
        try:
            cmd = [self.bin, "run", "--isolation", "chroot", "--network", "none", ctr, "--"]
            cmd += [entrypoint, *argv] if entrypoint else ["python3", "-m", "packager.harness", *argv]
            return run(cmd, check=False, timeout=timeout)
        finally:
            run([self.bin, "rm", ctr], check=False)
