"""Docker through its SDK, on this machine's socket or on a board over ssh.

``host`` None is the local daemon (``DOCKER_HOST`` applies); ``ssh://user@host[:port]``
uses the ssh client binary (``use_ssh_client``), so ``~/.ssh/config``, ControlMaster
and known_hosts apply. The API version is pinned to 1.41, docker 20.10's, the
daemon Debian bookworm ships. Images go in as a docker-archive tar made by
skopeo and ``images.load``: the same path for the local daemon and a remote one.
"""

from __future__ import annotations

import functools
import logging
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from packager.engine.base import (
    Container,
    ContainerSpec,
    Engine,
    ImageInfo,
    extract_stream,
    mounts_inside,
    skopeo_copy,
)
from packager.errors import BuildFailed, EngineUnavailable
from packager.platforms import Platform

log = logging.getLogger(__name__)

API_VERSION = "1.41"


class DockerContainer(Container):
    def __init__(self, c) -> None:  # docker.models.containers.Container
        self._c = c
        self.id = c.id
        self._streams: list = []

    def logs(self) -> Iterator[bytes]:
        stream = self._c.logs(stream=True, follow=True, stdout=True, stderr=True)
        self._streams.append(stream)
        return stream

    def logs_all(self, *, stdout: bool = True, stderr: bool = True) -> bytes:
        return self._c.logs(stdout=stdout, stderr=stderr)

    def wait(self, timeout: float | None = None) -> int:
        import requests.exceptions

        try:
            return int(self._c.wait(timeout=timeout)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as e:
            if timeout is None:
                raise
            self.kill()
            raise BuildFailed(f"container {self.id[:12]} timed out after {timeout} s") from e

    def kill(self) -> None:
        import docker.errors

        try:
            self._c.kill()
        except docker.errors.APIError:
            pass  # already stopped

    def remove(self) -> None:
        import docker.errors

        for stream in self._streams:
            _close_response(stream._response)
        self._streams.clear()
        try:
            self._c.remove(force=True)
        except docker.errors.NotFound:
            pass


def _close_response(response) -> None:
    """Close a streamed response's connection now (see ``_track_ssh_pools``)."""
    try:
        response.close()
    except OSError:
        pass  # the transport already went away


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


@dataclass(frozen=True)
class Docker(Engine):
    host: str | None = None  # None: the local daemon; or ssh://user@host[:port]
    name: ClassVar[str] = "docker"
    native_cdi_dirs: ClassVar[tuple[Path, ...]] = ()  # 20.10 has no CDI; devices.py resolves specs itself
    gpu_requests: ClassVar[bool] = True

    @property
    def remote(self) -> bool:
        return bool(self.host and self.host.startswith("ssh://"))

    @functools.cached_property
    def _connection(self) -> tuple[object, list, dict]:
        """(client, ssh pools, version): made on first use, so a frozen engine costs nothing until asked."""
        import docker
        import docker.errors

        try:
            if self.host:
                client = docker.DockerClient(base_url=self.host, version=API_VERSION, use_ssh_client=self.remote, timeout=600)
            else:
                client = docker.from_env(version=API_VERSION, timeout=600)
            pools = _track_ssh_pools(client) if self.remote else []
            return client, pools, client.version()
        except (docker.errors.DockerException, OSError) as e:
            raise EngineUnavailable(f"docker at {self.host or 'the local daemon'} does not answer: {e}"[:400],
                                    fix="start dockerd (make setup), or check the ssh target (ssh -o BatchMode=yes HOST docker version)") from e

    @property
    def client(self):  # docker.DockerClient
        return self._connection[0]

    def version(self) -> str:
        return str(self._connection[2].get("Version"))

    def describe(self) -> dict[str, str]:
        v = self._connection[2]
        return {"engine": "docker", "version": str(v.get("Version")), "api": API_VERSION,
                "host": self.host or "local", "arch": str(v.get("Arch"))}

    def close(self) -> None:
        if "_connection" not in self.__dict__:
            return  # never connected
        client, pools, _ = self._connection
        for pool in pools:
            _close_ssh_pool(pool)
        try:
            client.close()
        except OSError:
            pass  # an ssh transport whose process already exited

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
                         int(attrs.get("Size", 0)), tuple(cfg.get("Env") or ()), dict(cfg.get("Labels") or {}),
                         tuple(cfg.get("Entrypoint") or ()))

    def _store(self, source: str, platform: Platform, ref: str, src_args: tuple[str, ...]) -> None:
        with tempfile.TemporaryDirectory(prefix="request-pack-load-") as scratch:
            tar = Path(scratch) / "image.tar"
            skopeo_copy(source, f"docker-archive:{tar}:{ref}", platform, extra=src_args)
            log.info("loading %.0f MB into docker at %s", tar.stat().st_size / 1e6, self.host or "local")
            import docker.errors

            with tar.open("rb") as f:
                try:
                    self.client.images.load(f)
                except (docker.errors.ImageLoadError, docker.errors.APIError) as e:
                    # docker checks each layer against the config's diff_ids: an image that lies fails here
                    raise BuildFailed(f"docker load of {ref} failed: {str(e).strip()[-300:]}") from None

    def remove_image(self, ref: str) -> None:
        import docker.errors

        try:
            self.client.images.remove(ref)
        except docker.errors.NotFound:
            pass

    def start(self, spec: ContainerSpec) -> Container:
        from docker.types import DeviceRequest, Mount, Ulimit

        if spec.cdi_devices:
            raise EngineUnavailable("docker 20.10 cannot take CDI names", fix="use --engine podman")
        # no_copy: docker would otherwise fill an empty volume from the image's directory and reset its owner.
        mounts = [Mount(m.target, m.source, type=m.kind, read_only=m.read_only, no_copy=m.kind == "volume") for m in spec.mounts]
        kwargs: dict = dict(
            image=spec.image, command=list(spec.command), environment=spec.env, network_mode=spec.network,
            read_only=spec.read_only_rootfs, tmpfs=spec.tmpfs, cap_drop=list(spec.cap_drop),
            security_opt=list(spec.security_opt), ulimits=[Ulimit(name=k, soft=v, hard=v) for k, v in spec.ulimits.items()],
            mounts=mounts, devices=list(spec.devices), group_add=list(spec.group_add), labels=spec.labels,
            detach=True, name=spec.name, pids_limit=spec.pids_limit, init=spec.init,
        )
        if spec.user is not None:
            kwargs["user"] = spec.user
        if spec.entrypoint is not None:
            kwargs["entrypoint"] = list(spec.entrypoint)
        if spec.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        c = self.client.containers.create(**kwargs)
        try:
            c.start()
        except Exception:
            c.remove(force=True)
            raise
        return DockerContainer(c)

    # --- volumes, for a remote engine ---

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

    def containers_mounting(self, root: Path, label: str) -> list[str]:
        root = root.resolve()
        return [c.id for c in self.client.containers.list(all=True, filters={"label": label})
                if mounts_inside(c.attrs.get("Mounts"), root)]

    def remove_container(self, cid: str) -> None:
        import docker.errors

        try:
            self.client.containers.get(cid).remove(force=True)
        except docker.errors.NotFound:
            pass

    def remove_volume(self, name: str) -> None:
        import docker.errors

        try:
            self.client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass

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
