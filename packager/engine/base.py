"""The one interface the build and the runner use to talk to a container engine.

After repo2docker's ``engine.py``: an engine ``load``s an image, ``inspect_image``s
it and ``start``s a container from a ``ContainerSpec``; a ``Container`` gives
``logs``, ``wait`` and ``remove``. Engines are frozen dataclasses (what they
are, not what they did), one class per engine; nothing here branches on the
engine's name. What an engine cannot do (docker 20.10 and CDI names, podman and
``--gpus``, buildah and a read-only root) it refuses in ``start`` with a typed
error, before any container exists.

Images always go in through skopeo (``load_source``), from an OCI layout or a
registry, one platform at a time; afterwards the engine must show the image under
the config digest we expect, which proves it did not rewrite the image.
"""

from __future__ import annotations

import io
import logging
import subprocess
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from packager.errors import BuildFailed, EngineUnavailable
from packager.platforms import Platform
from packager.tools import need

log = logging.getLogger(__name__)


# --- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountSpec:
    source: str  # host path (bind) or volume name (volume)
    target: str
    read_only: bool
    kind: Literal["bind", "volume"] = "bind"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything a run asks of the engine; the runner records it in system.json."""

    image: str  # the runner passes "sha256:<config digest>", never a tag
    command: tuple[str, ...]
    user: str | None = None  # None: the image's
    mounts: tuple[MountSpec, ...] = ()
    tmpfs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()  # "host:container:perms"
    cdi_devices: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    gpus: bool = False
    ulimits: dict[str, int] = field(default_factory=dict)
    network: str = "none"
    read_only_rootfs: bool = True
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)
    pids_limit: int | None = 4096
    labels: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    entrypoint: tuple[str, ...] | None = None  # None keeps the image's
    # A tiny init as PID 1 (docker-init/tini, podman's catatonit): the kernel ignores signals a
    # PID 1 has no handler for, so a process that crashes under QEMU user emulation (QEMU
    # re-raises the guest's SIGSEGV at itself) would otherwise hang the container for ever.
    init: bool = True


@dataclass(frozen=True)
class ImageInfo:
    id: str
    os: str
    architecture: str
    variant: str | None
    size: int
    env: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


# --- commands ----------------------------------------------------------------------------------------


def run(argv: list[str], *, check: bool = True, timeout: float | None = None, what: str | None = None,
        max_file_bytes: int | None = None) -> RunResult:
    """``max_file_bytes`` caps every file the command writes (RLIMIT_FSIZE): a write beyond it fails."""
    log.info("+ %s", " ".join(argv))

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit if max_file_bytes is not None else None)
    except subprocess.TimeoutExpired as e:
        raise BuildFailed(f"{what or argv[0]}: timed out after {timeout} s") from e
    if check and proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
        raise BuildFailed(f"{what or ' '.join(argv[:3])} failed (exit {proc.returncode}): {tail}")
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def skopeo_copy(src: str, dest: str, platform: Platform | None = None, *, extra: tuple[str, ...] = (),
                timeout: float | None = None, max_file_bytes: int | None = None) -> None:
    """``timeout`` for a registry at either end (a stranger may stall); ``max_file_bytes`` caps what it writes."""
    argv = [need("skopeo", "skopeo"), "copy", "--quiet"]
    if platform is not None:
        argv += [f"--override-os={platform.os}", f"--override-arch={platform.architecture}"]
        if platform.variant:
            argv.append(f"--override-variant={platform.variant}")
    if timeout is not None:
        argv.append(f"--command-timeout={max(1, int(timeout))}s")
    run(argv + list(extra) + [src, dest], what=f"skopeo copy to {dest}", timeout=timeout and timeout + 30,
        max_file_bytes=max_file_bytes)


def push(layout: Path, tag: str, destination: str, *, tls_verify: bool = False, timeout: float | None = None) -> None:
    """All platforms with their digests unchanged: ``destination`` is ``host:port/name:tag``."""
    skopeo_copy(f"oci:{layout}:{tag}", f"docker://{destination}", timeout=timeout, extra=(
        "--all", "--preserve-digests", f"--dest-tls-verify={'true' if tls_verify else 'false'}"))


def local_ref(name: str, platform: Platform, tag: str = "latest") -> str:
    return f"localhost/request-pack/{name}:{tag}-{platform.slug}"


def mounts_inside(mounts: list[dict] | None, root: Path) -> bool:
    """Whether one of an inspected container's ``Mounts`` (docker's and podman's shape) is ``root`` or below it."""
    return any(isinstance(m.get("Source"), str) and Path(m["Source"]).is_relative_to(root) for m in mounts or [])


# --- the interface -----------------------------------------------------------------------------


class Container(ABC):
    id: str

    @abstractmethod
    def logs(self) -> Iterator[bytes]:
        """stdout and stderr as they come, until the container exits."""

    @abstractmethod
    def logs_all(self, *, stdout: bool = True, stderr: bool = True) -> bytes:
        """Everything the container wrote so far to the streams asked for."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int:
        """The exit code; ``BuildFailed`` after ``timeout`` seconds."""

    @abstractmethod
    def kill(self) -> None: ...

    @abstractmethod
    def remove(self) -> None:
        """Gone, whatever state it was in; also ends any stream opened on it."""


@dataclass(frozen=True)
class Engine(ABC):
    name: ClassVar[str]
    # CDI spec directories the engine reads itself; devices.py resolves specs for the others.
    native_cdi_dirs: ClassVar[tuple[Path, ...]] = ()
    gpu_requests: ClassVar[bool] = False  # docker's --gpus / device requests

    @property
    def remote(self) -> bool:
        """A remote engine cannot see this machine's files: data goes in volumes, not binds."""
        return False

    @abstractmethod
    def version(self) -> str:
        """Engine version; raises EngineUnavailable when it cannot be reached."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """What a result records about the engine."""

    @abstractmethod
    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` (a name or ``sha256:…`` id), or None when the engine does not have it."""

    @abstractmethod
    def _store(self, source: str, platform: Platform, ref: str, src_args: tuple[str, ...]) -> None:
        """Copy one platform of the skopeo ``source`` into the engine as ``ref``."""

    @abstractmethod
    def start(self, spec: ContainerSpec) -> Container:
        """Create and start a container; it is removed again if starting fails."""

    @abstractmethod
    def remove_image(self, ref: str) -> None:
        """Forget ``ref`` (untag; layers may stay)."""

    def close(self) -> None:
        """Release connections (the ssh transport's sessions); the engine is not used afterwards."""

    def containers_mounting(self, root: Path, label: str) -> list[str]:
        """Ids of this engine's containers (running or not) labelled ``label`` with a mount inside ``root``.

        A killed job or sweep leaves its container in the engine, writing into the directory a
        resumed attempt is about to use; only the engine can find it again."""
        raise EngineUnavailable(f"{self.name} cannot list the containers it keeps", fix="--engine docker or --engine podman")

    def remove_container(self, cid: str) -> None:
        """Stop and forget container ``cid``, whatever state it is in."""
        raise EngineUnavailable(f"{self.name} cannot remove the containers it keeps", fix="--engine docker or --engine podman")

    # --- built on the above ---

    def image_id(self, ref: str) -> str | None:
        """``sha256:…`` of ``ref``, or None when the engine does not have it."""
        info = self.inspect_image(ref)
        return info.id if info else None

    def load_source(self, source: str, platform: Platform, ref: str, *, src_args: tuple[str, ...] = ()) -> str:
        """Load a skopeo source (``oci:DIR[:TAG]``, ``docker://HOST/REPO@sha256:…``) as ``ref``; return the image id."""
        self.version()
        self._store(source, platform, ref, src_args)
        image = self.image_id(ref)
        if image is None:
            raise EngineUnavailable(f"{self.name} does not show {ref} after loading it")
        return image

    def load(self, layout: Path, tag: str, platform: Platform, ref: str) -> str:
        """One platform of the OCI layout as ``ref``; return the image id (``sha256:<config digest>``)."""
        return self.load_source(f"oci:{layout}:{tag}", platform, ref)

    def run(self, image: str, argv: list[str], *, platform: Platform, entrypoint: str | None = None,
            timeout: float = 600) -> RunResult:
        """A command in a throw-away container without network, as the image's user; stdout and stderr apart.
        (``platform`` is the image's: engines run whatever architecture the image is, through binfmt.)"""
        spec = ContainerSpec(image=image, command=tuple(argv), entrypoint=(entrypoint,) if entrypoint else None,
                             read_only_rootfs=False, cap_drop=(), security_opt=(), pids_limit=None,
                             # podman's default nofile (1M) is above what many hosts grant root in a sandbox
                             ulimits={"nofile": 20000, "nproc": 4096}, labels={"request-pack": "run"})
        log.info("+ %s run %s %s", self.name, image, " ".join(argv))
        container = self.start(spec)
        try:
            code = container.wait(timeout)
            out = container.logs_all(stderr=False).decode(errors="replace")
            err = container.logs_all(stdout=False).decode(errors="replace")
        finally:
            container.remove()
        return RunResult(code, out, err)

    # Volumes: only a remote engine needs them (it cannot bind this machine's directories).

    def make_volume(self, name: str, *, fresh: bool) -> None:
        raise EngineUnavailable(f"{self.name} runs locally and uses bind mounts")

    def fill_volume(self, name: str, image: str, tar_stream: bytes | Iterator[bytes]) -> None:
        raise EngineUnavailable(f"{self.name} runs locally and uses bind mounts")

    def remove_volume(self, name: str) -> None:
        raise EngineUnavailable(f"{self.name} runs locally and uses bind mounts")

    def fetch_volume(self, name: str, image: str, dest: Path) -> None:
        raise EngineUnavailable(f"{self.name} runs locally and uses bind mounts")


# --- shipping directories to a remote engine ---------------------------------------------------------


def tar_directory(src: Path) -> bytes:
    """A directory as a tar with numeric owner 0 and world-readable modes, for put_archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def _reset(ti: tarfile.TarInfo) -> tarfile.TarInfo:
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mode |= 0o444 | (0o111 if ti.isdir() else 0)
            return ti

        for path in sorted(src.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(src)), recursive=False, filter=_reset)
    return buf.getvalue()


def extract_stream(stream: Iterator[bytes], dest: Path) -> None:
    """Untar a get_archive stream with the 'data' filter: no absolute paths, links out, or devices."""
    buf = io.BytesIO(b"".join(stream))
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=buf, mode="r|") as tf:
        tf.extractall(dest, filter="data")
