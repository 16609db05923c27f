"""Container engines behind one small interface (``base.Engine``): docker (local or over ssh),
podman and buildah. The build loads its OCI layout through it; the runner loads, inspects and
starts its sandboxed containers through it; ``registry`` reads images by digest.

The build never asks an engine to build: images are written by ``packager.oci``
and only loaded, so every engine holds the same bytes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from packager.engine.base import (
    Container,
    ContainerSpec,
    Engine,
    ImageInfo,
    MountSpec,
    RunResult,
    extract_stream,
    local_ref,
    need,
    push,
    run,
    skopeo_copy,
    tar_directory,
)
from packager.errors import EngineUnavailable, EnvironmentMissing, ToolMissing

__all__ = ["Container", "ContainerSpec", "Engine", "ImageInfo", "MountSpec", "RunResult", "extract_stream", "get_engine",
           "local_ref", "need", "probe", "Probe", "push", "run", "skopeo_copy", "tar_directory", "ENGINES"]

ENGINES = ("docker", "podman", "buildah")


def get_engine(name: str = "docker", target: str | None = None) -> Engine:
    """``target`` None or "local" is this machine; ``ssh://user@host[:port]`` a board's docker over ssh."""
    from packager.engine.buildah import Buildah
    from packager.engine.docker import Docker
    from packager.engine.podman import Podman

    if target and target != "local":
        if not target.startswith("ssh://"):
            raise EngineUnavailable(f"unknown target {target!r}", fix="use local or ssh://user@host[:port]")
        if name != "docker":
            raise EngineUnavailable("remote targets run through docker's ssh transport", fix="--engine docker")
        if shutil.which("ssh") is None:
            raise ToolMissing("ssh is not installed", fix="apt-get install -y openssh-client")
        return Docker(target)
    engines = {"docker": Docker, "podman": Podman, "buildah": Buildah}
    if name not in engines:
        raise EngineUnavailable(f"unknown engine {name!r} (known: {', '.join(ENGINES)})", fix="--engine docker or --engine podman")
    return engines[name]()


@dataclass(frozen=True)
class Probe:
    """Whether an engine answers here: what it describes itself as, or why it does not answer."""

    engine: str
    description: dict[str, str] | None  # Engine.describe(); None when it does not answer
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.description is not None


def probe(name: str) -> Probe:
    """Ask engine ``name`` on this machine for its version, the way every command talks to it.

    Never raises for an engine that is missing or down: that is the answer (``doctor`` reports it)."""
    try:
        eng = get_engine(name)
        try:
            return Probe(name, eng.describe())
        finally:
            eng.close()
    except EnvironmentMissing as e:
        # The caller names its own fix (doctor: make setup); the reason alone is the answer.
        return Probe(name, None, e.message.removesuffix(f" (fix: {e.fix})") if e.fix else e.message)
