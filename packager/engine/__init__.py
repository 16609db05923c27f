"""One small interface to the container engines: load an OCI layout, inspect, run, push.

The build never asks an engine to build: images are written by ``packager.oci``
and only loaded here, so every engine holds the same bytes. Loading goes through
skopeo from the OCI layout, one platform at a time (docker 20.10 holds one
platform per tag); afterwards the engine's image id must equal the config
digest we wrote, which proves the engine did not rewrite the image.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildFailed, EngineUnavailable, ToolMissing
from ..platforms import Platform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed", fix=f"apt-get install -y {package}")
    return path


def run(argv: list[str], *, check: bool = True, timeout: float | None = None, what: str | None = None) -> RunResult:
    log.info("+ %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BuildFailed(f"{what or argv[0]}: timed out after {timeout} s") from e
    if check and proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
        raise BuildFailed(f"{what or ' '.join(argv[:3])} failed (exit {proc.returncode}): {tail}")
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def skopeo_copy(src: str, dest: str, platform: Platform | None = None, *, extra: tuple[str, ...] = ()) -> None:
    argv = [need("skopeo", "skopeo"), "copy", "--quiet"]
    if platform is not None:
        argv += [f"--override-os={platform.os}", f"--override-arch={platform.architecture}"]
        if platform.variant:
            argv.append(f"--override-variant={platform.variant}")
    run(argv + list(extra) + [src, dest], what=f"skopeo copy to {dest}")


def push(layout: Path, tag: str, destination: str, *, tls_verify: bool = False) -> None:
    """All platforms with their digests unchanged: ``destination`` is ``host:port/name:tag``."""
    skopeo_copy(f"oci:{layout}:{tag}", f"docker://{destination}", extra=(
        "--all", "--preserve-digests", f"--dest-tls-verify={'true' if tls_verify else 'false'}"))


class Engine(ABC):
    """What the build and the image tests need from a container engine."""

    name: str

    @abstractmethod
    def version(self) -> str:
        """Engine version; raises EngineUnavailable when it cannot be reached."""

    @abstractmethod
    def load(self, layout: Path, tag: str, platform: Platform, ref: str) -> str:
        """Load one platform of the layout as ``ref``; return the image id (``sha256:<config digest>``)."""

    @abstractmethod
    def image_id(self, ref: str) -> str | None:
        """``sha256:…`` of ``ref``, or None when the engine does not have it."""

    @abstractmethod
    def run(self, image: str, argv: list[str], *, platform: Platform, entrypoint: str | None = None,
            timeout: float = 600) -> RunResult:
        """Run a command in a throw-away container without network."""

    @abstractmethod
    def remove(self, ref: str) -> None:
        """Forget ``ref`` (untag; layers may stay)."""


def get_engine(name: str) -> Engine:
    from .buildah import Buildah
    from .docker import Docker
    from .podman import Podman

    engines = {"docker": Docker, "podman": Podman, "buildah": Buildah}
    if name not in engines:
        raise EngineUnavailable(f"unknown engine {name!r} (known: {', '.join(engines)})")
    return engines[name]()


def local_ref(name: str, platform: Platform, tag: str = "latest") -> str:
    return f"localhost/request-pack/{name}:{tag}-{platform.slug}"
