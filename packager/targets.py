"""Where a run's container executes: the local docker daemon, local podman, or a board over ssh.

The runner talks to one small protocol (``Engine``/``Container``); each target
is an implementation of it. Docker, local or remote, goes through the docker SDK
(``ssh://user@host[:port]`` uses the ssh client binary, so ``~/.ssh/config``,
ControlMaster and known_hosts apply). Podman goes through its CLI, because the
SDK would need ``podman system service`` running. When ``packager/engine`` grows
a ``run``, an adapter to it is one more class here.

A remote engine cannot see this machine's files, so the runner ships the dataset
into a volume with ``put_archive`` and fetches the output with ``get_archive``
(``Engine.remote`` tells it to); local engines get bind mounts.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from .errors import EngineUnavailable, ToolMissing

log = logging.getLogger(__name__)

API_VERSION = "1.41"  # docker 20.10, the daemon Debian bookworm ships


@dataclass(frozen=True)
class MountSpec:
    source: str  # host path (bind) or volume name (volume)
    target: str
    read_only: bool
    kind: Literal["bind", "volume"] = "bind"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything a sandboxed run asks of the engine; the runner records it in system.json."""

    image: str  # "sha256:<config digest>": content-addressed, never a tag
    command: tuple[str, ...]
    user: str
    mounts: tuple[MountSpec, ...]
    tmpfs: dict[str, str]
    env: dict[str, str]
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


@dataclass(frozen=True)
class ImageInfo:
    id: str
    os: str
    architecture: str
    variant: str | None
    size: int
    env: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


class Container(Protocol):
    id: str

    def logs(self) -> Iterator[bytes]: ...
    def logs_all(self) -> bytes: ...
    def wait(self) -> int: ...
    def kill(self) -> None: ...
    def remove(self) -> None: ...
    def get_archive(self, path: str) -> Iterator[bytes]: ...


class Engine(Protocol):
    name: str
    remote: bool
    native_cdi_dirs: tuple[Path, ...]
    gpu_requests: bool

    def describe(self) -> dict[str, str]: ...
    def close(self) -> None: ...
    def inspect_image(self, ref: str) -> ImageInfo | None: ...
    def load_image(self, tar: Path) -> None: ...
    def start(self, spec: ContainerSpec) -> Container: ...
    def make_volume(self, name: str, *, fresh: bool) -> None: ...
    def fill_volume(self, name: str, image: str, tar_stream: bytes | Iterator[bytes]) -> None: ...
    def fetch_volume(self, name: str, image: str, dest: Path) -> None: ...


# --- docker (SDK; local socket or ssh) -----------------------------------------------


class _DockerContainer:
    def __init__(self, c) -> None:  # docker.models.containers.Container
        self._c = c
        self.id = c.id

    def logs(self) -> Iterator[bytes]:
        return self._c.logs(stream=True, follow=True, stdout=True, stderr=True)

    def logs_all(self) -> bytes:
        return self._c.logs(stdout=True, stderr=True)

    def wait(self) -> int:
        return int(self._c.wait()["StatusCode"])

    def kill(self) -> None:
        import docker.errors

        try:
            self._c.kill()
        except docker.errors.APIError:
            pass  # already stopped

    def remove(self) -> None:
        import docker.errors

        try:
            self._c.remove(force=True)
        except docker.errors.NotFound:
            pass

    def get_archive(self, path: str) -> Iterator[bytes]:
        stream, _ = self._c.get_archive(path)
        return stream


def _track_ssh_pools(client) -> list:
    """With ``use_ssh_client`` the SDK makes a new connection pool (one ``ssh … docker system
    dial-stdio`` per connection) for every request and keeps none, so ``client.close()`` closes
    nothing. The idle ssh sessions pile up past sshd's MaxSessions (10: "Session open refused by
    peer"), and the pools' finalizers close them at interpreter exit, when the transport is long
    gone, printing BrokenPipeError tracebacks. So: keep the pools, end each one as soon as its one
    request has given its connection back, and end the rest in ``close()``."""
    adapter = client.api.get_adapter("http+docker://ssh")
    pools: list = []
    lock = threading.Lock()
    make = adapter.get_connection

    def done(pool) -> bool:
        # A pool serves one request, so a connection back in its queue means the request is over
        # (the SDK's pool does not count the connections it makes: num_connections stays 0).
        return pool.pool is None or any(c is not None for c in list(pool.pool.queue))

    def get_connection(*args, **kwargs):
        pool = make(*args, **kwargs)
        with lock:
            finished = [p for p in pools if done(p)]
            pools[:] = [p for p in pools if p not in finished] + [pool]
        for p in finished:
            _close_ssh_pool(p)
        return pool

    adapter.get_connection = get_connection
    return pools


def _close_ssh_pool(pool) -> None:
    """End each connection's ssh process; a closed stdin makes the SDK's later close a no-op."""
    import queue

    conns = []
    while pool.pool is not None:
        try:
            conns.append(pool.pool.get(block=False))
        except queue.Empty:
            break
    for conn in filter(None, conns):
        proc = getattr(getattr(conn, "sock", None), "proc", None)
        if proc is None:
            continue
        try:
            proc.stdin.close()
        except OSError:
            pass  # the process already exited: nothing to flush into
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    pool.close()


class DockerEngine:
    name = "docker"
    native_cdi_dirs: tuple[Path, ...] = ()  # 20.10 has no CDI; devices.py resolves specs itself
    gpu_requests = True

    def __init__(self, base_url: str | None = None) -> None:
        import docker
        import docker.errors

        self.base_url = base_url
        self.remote = bool(base_url and base_url.startswith("ssh://"))
        try:
            if base_url:
                self.client = docker.DockerClient(base_url=base_url, version=API_VERSION, use_ssh_client=self.remote, timeout=600)
                self._ssh_pools = _track_ssh_pools(self.client) if self.remote else []
            else:
                self.client = docker.from_env(version=API_VERSION, timeout=600)
            self._version = self.client.version()
        except (docker.errors.DockerException, OSError) as e:
            where = base_url or "the local daemon"
            raise EngineUnavailable(f"docker at {where} does not answer: {e}",
                                    fix="start dockerd, or check the ssh target (ssh -o BatchMode=yes HOST docker version)") from e

    def close(self) -> None:
        for pool in getattr(self, "_ssh_pools", ()):
            _close_ssh_pool(pool)
        try:
            self.client.close()
        except OSError:
            pass  # an ssh transport whose process already exited

    def describe(self) -> dict[str, str]:
        return {"engine": "docker", "version": str(self._version.get("Version")), "api": API_VERSION,
                "host": self.base_url or "local", "arch": str(self._version.get("Arch"))}

    def inspect_image(self, ref: str) -> ImageInfo | None:
        import docker.errors

        try:
            attrs = self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as e:
            if e.status_code == 404:
                return None
            raise
        cfg = attrs.get("Config") or {}
        return ImageInfo(attrs["Id"], attrs.get("Os", ""), attrs.get("Architecture", ""), attrs.get("Variant") or None,
                         int(attrs.get("Size", 0)), tuple(cfg.get("Env") or ()), dict(cfg.get("Labels") or {}))

    def load_image(self, tar: Path) -> None:
        with tar.open("rb") as f:
            self.client.images.load(f)

    def start(self, spec: ContainerSpec) -> Container:
        from docker.types import DeviceRequest, Mount, Ulimit

        # no_copy: docker would otherwise fill an empty volume from the image's directory and reset its owner.
        mounts = [Mount(m.target, m.source, type=m.kind, read_only=m.read_only, no_copy=m.kind == "volume") for m in spec.mounts]
        kwargs: dict = dict(
            image=spec.image,
            command=list(spec.command),
            user=spec.user,
            environment=spec.env,
            network_mode=spec.network,
            read_only=spec.read_only_rootfs,
            tmpfs=spec.tmpfs,
            cap_drop=list(spec.cap_drop),
            security_opt=list(spec.security_opt),
            ulimits=[Ulimit(name=k, soft=v, hard=v) for k, v in spec.ulimits.items()],
            mounts=mounts,
            devices=list(spec.devices),
            group_add=list(spec.group_add),
            labels=spec.labels,
            detach=True,
            name=spec.name,
            pids_limit=spec.pids_limit,
        )
        if spec.entrypoint is not None:
            kwargs["entrypoint"] = list(spec.entrypoint)
        if spec.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        if spec.cdi_devices:
            raise EngineUnavailable("docker 20.10 cannot take CDI names", fix="use --engine podman")
        c = self.client.containers.create(**kwargs)
        try:
            c.start()
        except Exception:
            c.remove(force=True)
            raise
        return _DockerContainer(c)

    def make_volume(self, name: str, *, fresh: bool) -> None:
        import docker.errors

        if fresh:
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(name, labels={"request-pack": "run"})

    def fill_volume(self, name: str, image: str, tar_stream: bytes | Iterator[bytes]) -> None:
        # put_archive needs a container with the volume mounted writable; this one never starts.
        from docker.types import Mount

        helper = self.client.containers.create(image, command=["true"], mounts=[Mount("/v", name, type="volume")], network_mode="none")
        try:
            helper.put_archive("/v", tar_stream)
        finally:
            helper.remove(force=True)

    def fetch_volume(self, name: str, image: str, dest: Path) -> None:
        from docker.types import Mount

        helper = self.client.containers.create(image, command=["true"], mounts=[Mount("/v", name, type="volume", read_only=True)], network_mode="none")
        try:
            stream, _ = helper.get_archive("/v/.")
            extract_stream(stream, dest)
        finally:
            helper.remove(force=True)


# --- podman (CLI) ----------------------------------------------------------------------------


class _PodmanContainer:
    def __init__(self, engine: "PodmanEngine", cid: str) -> None:
        self._e = engine
        self.id = cid

    def logs(self) -> Iterator[bytes]:
        proc = subprocess.Popen([*self._e.argv, "logs", "-f", self.id], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        yield from proc.stdout
        proc.wait()

    def logs_all(self) -> bytes:
        return subprocess.run([*self._e.argv, "logs", self.id], capture_output=True).stdout

    def wait(self) -> int:
        out = self._e.cli("wait", self.id)
        return int(out.strip().splitlines()[-1])

    def kill(self) -> None:
        subprocess.run([*self._e.argv, "kill", self.id], capture_output=True)

    def remove(self) -> None:
        subprocess.run([*self._e.argv, "rm", "-f", self.id], capture_output=True)

    def get_archive(self, path: str) -> Iterator[bytes]:
        proc = subprocess.run([*self._e.argv, "cp", f"{self.id}:{path}", "-"], capture_output=True, check=True)
        yield proc.stdout


class PodmanEngine:
    name = "podman"
    remote = False
    # podman 4.3 reads CDI specs from these only (cdi_spec_dirs in containers.conf came later).
    native_cdi_dirs = (Path("/etc/cdi"), Path("/var/run/cdi"))
    gpu_requests = False  # podman names GPUs by CDI (nvidia.com/gpu=all)

    def __init__(self) -> None:
        exe = shutil.which("podman")
        if exe is None:
            raise ToolMissing("podman is not installed", fix="apt-get install -y podman")
        # Debian 12's crun refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"); runc works.
        self.argv = [exe] + (["--runtime", "runc"] if shutil.which("runc") else [])
        try:
            self._version = json.loads(self.cli("version", "--format", "json"))
        except (subprocess.CalledProcessError, json.JSONDecodeError) as e:
            raise EngineUnavailable(f"podman does not work here: {e}") from e

    def close(self) -> None:
        pass  # every call is its own process

    def cli(self, *args: str) -> str:
        log.debug("+ %s", " ".join([*self.argv, *args]))
        proc = subprocess.run([*self.argv, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, [*self.argv, *args], proc.stdout, proc.stderr)
        return proc.stdout

    def describe(self) -> dict[str, str]:
        client = self._version.get("Client", self._version)
        return {"engine": "podman", "version": str(client.get("Version")), "host": "local",
                "runtime": "runc" if "runc" in self.argv else "default"}

    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            data = json.loads(self.cli("image", "inspect", ref))[0]
        except subprocess.CalledProcessError:
            return None
        image_id = data["Id"] if data["Id"].startswith("sha256:") else "sha256:" + data["Id"]
        cfg = data.get("Config") or {}
        return ImageInfo(image_id, data.get("Os", ""), data.get("Architecture", ""), data.get("Variant") or None,
                         int(data.get("Size", 0)), tuple(cfg.get("Env") or ()), dict(cfg.get("Labels") or {}))

    def load_image(self, tar: Path) -> None:
        self.cli("load", "-i", str(tar))

    def start(self, spec: ContainerSpec) -> Container:
        args = ["run", "-d", "--network", spec.network, "--user", spec.user]
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
        if spec.gpus:
            raise EngineUnavailable("podman has no --gpus", fix="name the GPU by CDI, e.g. --device nvidia.com/gpu=all")
        try:
            cid = self.cli(*args, spec.image, *spec.command).strip().splitlines()[-1]
        except subprocess.CalledProcessError as e:
            raise EngineUnavailable(f"podman could not start the container: {e.stderr.strip()}") from e
        return _PodmanContainer(self, cid)

    def make_volume(self, name: str, *, fresh: bool) -> None:
        raise EngineUnavailable("podman runs locally and uses bind mounts")

    def fill_volume(self, name: str, image: str, tar_stream: bytes | Iterator[bytes]) -> None:
        raise EngineUnavailable("podman runs locally and uses bind mounts")

    def fetch_volume(self, name: str, image: str, dest: Path) -> None:
        raise EngineUnavailable("podman runs locally and uses bind mounts")


# --- choosing and helpers --------------------------------------------------------------------


def open_engine(engine: str = "docker", target: str | None = None) -> Engine:
    """``target`` None or "local" is this machine; ``ssh://user@host[:port]`` a remote docker."""
    if target and target != "local":
        if not target.startswith("ssh://"):
            raise EngineUnavailable(f"unknown target {target!r}", fix="use local or ssh://user@host[:port]")
        if engine != "docker":
            raise EngineUnavailable("remote targets run through docker's ssh transport", fix="--engine docker")
        if shutil.which("ssh") is None:
            raise ToolMissing("ssh is not installed", fix="apt-get install -y openssh-client")
        return DockerEngine(target)
    if engine == "docker":
        return DockerEngine()
    if engine == "podman":
        return PodmanEngine()
    raise EngineUnavailable(f"unknown engine {engine!r}", fix="--engine docker or --engine podman")


def tar_directory(src: Path) -> bytes:
    """The dataset as a tar with numeric owner 0 and world-readable modes, for put_archive."""
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
