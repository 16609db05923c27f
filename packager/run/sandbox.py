"""One container in the sandbox: started from a pinned image, its log streamed, what ran recorded.

``run_in_sandbox`` is steps 2-5 of ``request-pack run`` for an image already pinned
(``run/image.py``) and a ready command, and what ``tune`` runs its search with:

2. check the devices (``devices.plan_devices``) and, for a non-native platform,
   the QEMU binfmt entry, all before any container starts;
3. start the container in the sandbox (``SANDBOX``): no network, read-only root
   with a tmpfs for scratch, all capabilities dropped, no-new-privileges, uid
   1000, dataset read-only, only the output directory writable (on a remote
   engine: volumes the data set is copied into and the outputs out of);
   Its output directory is made writable for uid 1000; with ``--resume`` a torn
   last line of predictions.jsonl (a crash, even ``kill -9``) is cut, duplicated
   ids are refused, and the harness skips the ids already there;
4. stream the container's log into ``OUT/logs/`` and report progress from the
   number of lines in ``predictions.jsonl`` (the harness appends and flushes one
   batch at a time);
5. record what ran (image, engine, sandbox, devices, times) in ``OUT/run.json``
   and in system.json's ``sandbox``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packager.cache import default_root as default_cache_root
from packager.contract import (
    CACHE_MOUNT,
    DATA_MOUNT,
    OUT_MOUNT,
    SANDBOX,
    SCRATCH,
    SCRATCH_SIZE_BYTES,
    scratch_tmpfs,
)
from packager.contract import RUNNER_UID as CONTAINER_UID
from packager.engine import ContainerSpec, Engine, ImageInfo, MountSpec, tar_directory
from packager.errors import BadInput, CheckFailed
from packager.platforms import Platform
from packager.results import METRICS_NAME, PREDICTIONS_NAME, SYSTEM_NAME
from packager.run.devices import DEFAULT_CDI_DIRS, DevicePlan, plan_devices
from packager.run.image import ImageRef, check_emulation, emulation_env, ensure_image
from packager.run.power import HostPowerProbe
from packager.runconfig import RunConfig

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None], None]
RUN_RECORD = "run.json"
LOG_DIR = "logs"


# --- the output directory and resuming ------------------------------------------------------



@dataclass(frozen=True)
class ResumeState:
    done: int
    torn_bytes: int


def prepare_output(out: Path, *, resume: bool) -> ResumeState:
    """Make ``out`` writable for the container user; on resume repair a torn tail and check for duplicates."""
    out.mkdir(parents=True, exist_ok=True)
    (out / LOG_DIR).mkdir(exist_ok=True)
    preds = out / PREDICTIONS_NAME
    state = ResumeState(0, 0)
    if preds.exists() and preds.stat().st_size:
        if not resume:
            raise BadInput("holds predictions of an earlier run; pass --resume to continue it or choose an empty directory",
                           file=out)
        state = repair_predictions(preds)
    for stale in (METRICS_NAME,):
        if resume and (out / stale).exists():
            (out / stale).unlink()  # written at the end of a run; a resumed run rewrites it
    _hand_to_container_user(out)
    return state


def repair_predictions(preds: Path) -> ResumeState:
    """Cut a partial last line (a crash mid-write) and refuse duplicated ids."""
    data = preds.read_bytes()
    cut = data.rfind(b"\n") + 1
    torn = len(data) - cut
    lines = data[:cut].splitlines()
    ids: set[str] = set()
    good_end = 0
    for i, line in enumerate(lines):
        try:
            pid = json.loads(line)["id"]
        except (json.JSONDecodeError, KeyError, TypeError):
            # Only the last line can be torn by a crash; garbage earlier is corruption.
            if i == len(lines) - 1:
                torn += len(line) + 1
                break
            raise CheckFailed(f"{preds}: line {i + 1} is not a prediction; cannot resume")
        if pid in ids:
            raise CheckFailed(f"{preds}: id {pid!r} appears twice; cannot resume")
        ids.add(pid)
        good_end += len(line) + 1
    if torn:
        log.warning("%s: dropping %d bytes of a torn last line", preds, torn)
        with preds.open("r+b") as f:
            f.truncate(good_end)
    return ResumeState(len(ids), torn)


def _hand_to_container_user(out: Path) -> None:
    for path in [out, *out.rglob("*")]:
        try:
            os.chown(path, CONTAINER_UID, CONTAINER_UID, follow_symlinks=False)
        except PermissionError:
            # Not root: the engine maps uid 1000 to someone else; open the directory instead.
            if path.is_dir():
                path.chmod(0o777)


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


# --- the container ------------------------------------------------------------------------------



@dataclass(frozen=True)
class RunOptions:
    stage: str
    dataset: Path
    out: Path
    platform: Platform
    devices: tuple[str, ...] = ()
    resume: bool = False
    cdi_dirs: tuple[Path, ...] = DEFAULT_CDI_DIRS
    samples: int | None = None  # None: the manifest's count for the stage
    env: dict[str, str] = field(default_factory=dict)
    # Extra read-only binds (host, container): for running a working copy of the harness against an image.
    extra_mounts: tuple[tuple[str, str], ...] = ()
    mode: str = "quick"  # quick | submission (packager/harness/scenarios.py)
    # The data set's layout when the user names it (--dataset-layout); None: detected from the directory.
    dataset_layout: str | None = None
    # Host directory for the harness's preprocessed tensors, mounted read-write at CACHE_MOUNT and reused
    # across runs (keyed by image content and preprocessing); None: <request-pack cache>/tensors.
    tensor_cache: Path | None = None
    # The scratch tmpfs's size; None: contract.SCRATCH_SIZE_BYTES. Tests shrink it to prove data sets larger
    # than scratch run.
    scratch_bytes: int | None = None
    # Under QEMU the performance scenarios measure the emulator, not the board: skipped unless forced.
    emulated_performance: bool = False
    # Run-time knobs (threads, batch, ...): passed to the harness, recorded in metrics.json; the image stays.
    run_config: RunConfig = RunConfig()


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    wall_s: float
    out: Path
    container_log: Path
    record: dict


def build_spec(image: str, command: Sequence[str], plan: DevicePlan, *, dataset: str, out: str,
               remote: bool, env: dict[str, str], run_id: str, entrypoint: Sequence[str] | None = None,
               extra_mounts: Sequence[tuple[str, str]] = (), cache: str | None = None,
               scratch_bytes: int | None = None) -> ContainerSpec:
    kind = "volume" if remote else "bind"
    mounts = [MountSpec(dataset, DATA_MOUNT, True, kind), MountSpec(out, OUT_MOUNT, False, kind)]
    if cache is not None:
        mounts.append(MountSpec(cache, CACHE_MOUNT, False, kind))
    mounts += [MountSpec(h, c, True, "bind") for h, c in (*plan.mounts, *extra_mounts)]
    full_env = {"HOME": SCRATCH, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    full_env.update(e.split("=", 1) for e in plan.env if "=" in e)
    full_env.update(env)
    return ContainerSpec(
        image=image,
        command=tuple(command),
        user=str(SANDBOX["user"]),
        mounts=tuple(mounts),
        tmpfs={SCRATCH: scratch_tmpfs(scratch_bytes or SCRATCH_SIZE_BYTES)},
        env=full_env,
        devices=tuple(n.as_docker() for n in plan.nodes),
        cdi_devices=plan.native_cdi,
        group_add=plan.group_add,
        gpus=plan.gpus,
        ulimits=dict(SANDBOX["ulimits"]),  # type: ignore[arg-type]
        pids_limit=int(SANDBOX["pids_limit"]),  # type: ignore[arg-type]
        labels={"request-pack.run": run_id},
        name=f"request-pack-{run_id}",
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
    )


def run_container(engine: Engine, spec: ContainerSpec, out: Path, *, log_name: str = "container.log",
                  progress: ProgressFn | None = None, total: int | None = None,
                  on_start: Callable[[str], None] | None = None) -> tuple[int, Path]:
    """Start, stream the log to ``out/logs``, report progress, wait; always remove the container."""
    log_path = out / LOG_DIR / log_name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # SIGTERM/SIGINT while the engine creates the container would leave a container the runner has
    # no handle on (issue 17): they are held until the handle is inside the try that removes it.
    held = _HeldSignals()
    try:
        container = engine.start(spec)
    except BaseException:
        held.release()
        raise
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        held.release()
        log.info("container %s started from %s", container.id[:12], spec.image)
        if on_start:
            on_start(container.id)

        def pump() -> None:
            with log_path.open("ab") as f:
                for chunk in container.logs():
                    f.write(chunk)
                    f.flush()

        def poll() -> None:
            preds = out / PREDICTIONS_NAME
            while not stop.wait(0.5):
                if progress:
                    progress(count_lines(preds), total)

        threads.append(threading.Thread(target=pump, daemon=True))
        if progress and not engine.remote:
            threads.append(threading.Thread(target=poll, daemon=True))
        for t in threads:
            t.start()
        try:
            code = container.wait()
        except BaseException:
            container.kill()
            raise
    finally:
        stop.set()
        if threads:
            threads[0].join(timeout=3)
            if threads[0].is_alive():
                # Over ssh the follow stream may outlive the container; take the whole log instead.
                log_path.write_bytes(container.logs_all())
        container.remove()
    if progress and not engine.remote:
        progress(count_lines(out / PREDICTIONS_NAME), total)
    return code, log_path


class _HeldSignals:
    """SIGTERM and SIGINT noted instead of acted on, from construction until ``release``, which
    restores the handlers and hands them what arrived (``exit_on_sigterm``'s SystemExit, say).

    Only the main thread can set handlers; elsewhere nothing is held (Python runs handlers in the
    main thread anyway, so a worker thread's ``engine.start`` is not interrupted by them)."""

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._old: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                self._old[sig] = signal.signal(sig, lambda signum, frame: self._pending.append(signum))

    def release(self) -> None:
        old, self._old = self._old, {}
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        for signum in dict.fromkeys(self._pending):
            handler = old.get(signum)
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)  # the default action, now that the handle is held
        self._pending.clear()


def run_in_sandbox(engine: Engine, ref: ImageRef, command: Sequence[str] | Callable[[ImageInfo], Sequence[str]],
                   opts: RunOptions, *, declared_devices: Sequence = (), progress: ProgressFn | None = None,
                   total: int | None = None, on_start: Callable[[str], None] | None = None,
                   entrypoint: Sequence[str] | None = None) -> RunResult:
    """Steps 1-5 of the module doc for an already pinned image and a ready command."""
    started = time.time()
    # 2. everything that can be missing is checked before a container exists
    plan = plan_devices(declared_devices, opts.devices, cdi_dirs=opts.cdi_dirs,
                        engine_cdi_dirs=engine.native_cdi_dirs, engine_has_gpu_requests=engine.gpu_requests)
    if engine.remote and plan.nodes:
        log.info("device nodes are opened on the remote host: %s", ", ".join(n.host for n in plan.nodes))
    if not opts.dataset.is_dir():
        raise BadInput("dataset directory does not exist", file=opts.dataset)
    if not engine.remote:
        check_emulation(opts.platform)
    resume_state = prepare_output(opts.out, resume=opts.resume)
    # 1. the image, by digest
    info = ensure_image(engine, ref)
    run_id = uuid.uuid4().hex[:12]
    dataset_src, out_src = str(opts.dataset.resolve()), str(opts.out.resolve())
    if engine.remote:
        dataset_src, out_src = _ship_to_remote(engine, ref, opts, resume_state)
    cache_src = _tensor_cache(engine, ref, opts)
    env = {"REQUEST_PACK_IMAGE_DIGEST": ref.manifest_digest or ref.config_digest, **emulation_env(opts.platform),
           **opts.env}
    if callable(command):
        command = command(info)
    spec = build_spec(ref.image, command, plan, dataset=dataset_src, out=out_src, remote=engine.remote, env=env,
                      run_id=run_id, entrypoint=entrypoint, extra_mounts=opts.extra_mounts, cache=cache_src,
                      scratch_bytes=opts.scratch_bytes)
    # 3-4. Host power (RAPL), read on this host outside the sandbox, around the container's run.
    with HostPowerProbe(remote=engine.remote) as host_power:
        code, log_path = run_container(engine, spec, opts.out, progress=progress, total=total, on_start=on_start)
    if engine.remote:
        engine.fetch_volume(out_src, ref.image, opts.out)
        # The board keeps nothing of a finished run; an unfinished run's output volume stays for --resume.
        engine.remove_volume(dataset_src)
        if code == 0:
            engine.remove_volume(out_src)
    wall = time.time() - started
    # 5.
    record = {
        "run_id": run_id,
        "stage": opts.stage,
        "artifact": ref.artifact,
        "platform": str(opts.platform),
        "emulated": opts.platform is not Platform.native(),
        "image": {"config_digest": ref.config_digest, "manifest_digest": ref.manifest_digest,
                  "index_digest": ref.index_digest, "size": info.size, "record": str(ref.record) if ref.record else None},
        "engine": engine.describe(),
        "sandbox": {**SANDBOX, "tmpfs": dict(spec.tmpfs), "devices": plan.record(),
                    "tensor_cache": f"{CACHE_MOUNT} (read-write: preprocessed tensors, keyed by content)",
                    "extra_read_only_mounts": [f"{h}:{c}" for h, c in opts.extra_mounts]},
        "mounts": {DATA_MOUNT: str(opts.dataset.resolve()), OUT_MOUNT: str(opts.out.resolve()), CACHE_MOUNT: cache_src},
        "command": list(command),
        "resumed_after": resume_state.done if opts.resume else None,
        "exit_code": code,
        "host_power": host_power.reading().model_dump(mode="json"),
        "wall_s": round(wall, 3),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    (opts.out / RUN_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    _annotate_system(opts.out / SYSTEM_NAME, record)
    return RunResult(code, wall, opts.out, log_path, record)


TENSOR_VOLUME = "request-pack-tensors"


TENSOR_CACHE_ENV = "REQUEST_PACK_TENSOR_CACHE"


def tensor_cache_dir(opts: RunOptions) -> Path:
    """``opts.tensor_cache``, else $REQUEST_PACK_TENSOR_CACHE (a disk with room for a data set's crops),
    else ``tensors/`` in the request-pack cache."""
    env = os.environ.get(TENSOR_CACHE_ENV)
    return opts.tensor_cache or (Path(env) if env else default_cache_root() / "tensors")


def _tensor_cache(engine: Engine, ref: ImageRef, opts: RunOptions) -> str:
    """The host directory (or, on a remote engine, the volume) mounted read-write at CACHE_MOUNT."""
    if engine.remote:
        engine.make_volume(TENSOR_VOLUME, fresh=False)
        _chown_volume(engine, TENSOR_VOLUME, ref.image)
        return TENSOR_VOLUME
    cache = tensor_cache_dir(opts)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        os.chown(cache, CONTAINER_UID, CONTAINER_UID)
    except PermissionError:
        cache.chmod(0o777)  # not root: the engine maps uid 1000 to someone else
    return str(cache.resolve())


def _ship_to_remote(engine: Engine, ref: ImageRef, opts: RunOptions, state: ResumeState) -> tuple[str, str]:
    """Volumes on the remote engine: the dataset copied in, the output volume kept across --resume."""
    key = hashlib.sha256(str(opts.out.resolve()).encode()).hexdigest()[:16]
    data_vol, out_vol = f"request-pack-data-{key}", f"request-pack-out-{key}"
    engine.make_volume(data_vol, fresh=True)
    engine.fill_volume(data_vol, ref.image, tar_directory(opts.dataset))
    engine.make_volume(out_vol, fresh=not opts.resume)
    if opts.resume and state.done:
        # The local copy was repaired (torn tail cut); the remote continues from it.
        engine.fill_volume(out_vol, ref.image, tar_directory(opts.out))
    _chown_volume(engine, out_vol, ref.image)
    return data_vol, out_vol


def _chown_volume(engine: Engine, volume: str, image: str) -> None:
    """A fresh volume is root's; the sandbox user must write to it. A root container with no network
    and the engine's default capabilities (it needs CAP_CHOWN) does that and nothing else."""
    # The entrypoint is replaced: an artifact's image starts the harness.
    spec = ContainerSpec(image=image, command=(), entrypoint=("chown", "-R", f"{CONTAINER_UID}:{CONTAINER_UID}", "/v"),
                         user="0:0", mounts=(MountSpec(volume, "/v", False, "volume"),), tmpfs={}, env={}, cap_drop=(),
                         labels={"request-pack": "chown"})
    container = engine.start(spec)
    try:
        if container.wait() != 0:
            raise CheckFailed(f"could not hand volume {volume} to uid {CONTAINER_UID}")
    finally:
        container.remove()


def _annotate_system(path: Path, record: dict) -> None:
    """system.json is the harness's; add what only the runner knows (sandbox, devices, image)."""
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not JSON; leaving it", path)
        return
    data["sandbox"] = {**record["sandbox"], "engine": record["engine"], "run_id": record["run_id"]}
    data["image_digest"] = record["image"]["manifest_digest"] or record["image"]["config_digest"]
    passed = [n["container"] for n in record["sandbox"]["devices"]["nodes"]] + record["sandbox"]["devices"]["cdi_native"]
    data["devices"] = sorted(set(data.get("devices") or []) | set(passed))
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
