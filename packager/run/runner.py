"""Run one stage of an artifact's image in a sandbox and collect its outputs.

``run_stage`` is the whole of ``request-pack run``:

1. read the build record and pin the image: the platform's manifest digest comes
   from ``build/<name>/build-record.json``; the manifest blob in the OCI layout is
   hashed to check it, and names the config digest, which is the image id every
   engine uses. The container is created from ``sha256:<config digest>``, never a
   tag; an engine image whose id or platform differs is an ``ImageMismatch``;
2. check the devices (``devices.plan_devices``) and, for a non-native platform,
   the QEMU binfmt entry, all before any container starts;
3. start the container in the sandbox (``SANDBOX``): no network, read-only root
   with a tmpfs for scratch, all capabilities dropped, no-new-privileges, uid
   1000, dataset read-only, only the output directory writable;
4. stream the container's log into ``OUT/logs/`` and report progress from the
   number of lines in ``predictions.jsonl`` (the harness appends and flushes one
   batch at a time);
5. record what ran (image, engine, sandbox, devices, times) in ``OUT/run.json``
   and in system.json's ``sandbox``.

Resuming: after a crash (even ``kill -9``) predictions.jsonl holds whole lines
plus at most one torn line at its end. ``--resume`` drops the torn tail, refuses
a file with duplicated ids, and asks the harness to skip the ids already there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from packager.cache import default_root as default_cache_root
from packager.cache import sha256_digest
from packager.contract import (
    BUILD_RECORD_NAME,
    CACHE_MOUNT,
    DATA_MOUNT,
    ENTRYPOINT,
    MODEL_PATH,
    OUT_MOUNT,
    RUN_CONFIG,
    SANDBOX,
    SCRATCH,
    SCRATCH_SIZE_BYTES,
    scratch_tmpfs,
)
from packager.contract import RUNNER_UID as CONTAINER_UID
from packager.contract import (
    harness_argv as contract_argv,
)
from packager.engine import ContainerSpec, Engine, ImageInfo, MountSpec, tar_directory
from packager.errors import (
    BadInput,
    CheckFailed,
    ImageMismatch,
    ImageNotAvailable,
    StageFailed,
    ToolMissing,
)
from packager.harness.dataset import DatasetSpec, load_dataset, resolve
from packager.manifest import Manifest
from packager.platforms import Platform
from packager.repo import default_build_root
from packager.results import METRICS_NAME, PREDICTIONS_NAME, SYSTEM_NAME
from packager.run.devices import DEFAULT_CDI_DIRS, DevicePlan, plan_devices
from packager.run.power import HostPowerProbe
from packager.runconfig import ARGV_FLAG as RUN_CONFIG_FLAG
from packager.runconfig import RunConfig

log = logging.getLogger(__name__)

RECORD_NAME = BUILD_RECORD_NAME
RUN_RECORD = "run.json"
LOG_DIR = "logs"
ProgressFn = Callable[[int, int | None], None]


# --- the image ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """The image of one platform, pinned by digests from the build record."""

    artifact: str
    platform: Platform
    config_digest: str  # "sha256:…": the engine's image id
    manifest_digest: str | None = None
    index_digest: str | None = None
    oci_layout: Path | None = None
    record: Path | None = None
    # A registry source instead of the layout ("docker://host/repo@sha256:<manifest>"), for --image.
    source: str | None = None
    source_args: tuple[str, ...] = ()

    @property
    def image(self) -> str:
        return self.config_digest


def _platform_entry(record: dict, platform: Platform, file: Path) -> dict:
    """The record's entry for one platform; keyed by OCI platform string or a list with 'platform'."""
    entries = record.get("platforms") or record.get("manifests")
    if isinstance(entries, dict):
        entry = entries.get(platform.value)
    elif isinstance(entries, list):
        entry = next((e for e in entries if isinstance(e, dict) and Platform.parse(str(e.get("platform", ""))) == platform), None) \
            if all(isinstance(e, dict) for e in entries) else None
    else:
        raise BadInput("no per-platform manifests", file=file, field="platforms")
    if not isinstance(entry, dict):
        built = ", ".join(entries if isinstance(entries, dict) else [str(e.get("platform")) for e in entries])
        raise ImageNotAvailable(f"{platform} was not built (built: {built})", fix=f"request-pack build --platform {platform}")
    return entry


def image_from_record(artifact_dir: Path, name: str, platform: Platform, build_root: Path | None = None) -> ImageRef:
    """Pin the image of ``platform`` from ``build/<name>/build-record.json`` (next to the artifacts/ dir by default)."""
    build_dir = (build_root or default_build_root(artifact_dir)) / name
    record_path = build_dir / RECORD_NAME
    if not record_path.is_file():
        raise ImageNotAvailable(f"no build record at {record_path}", fix=f"request-pack build {artifact_dir}")
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"not JSON: {e}", file=record_path) from None
    entry = _platform_entry(record, platform, record_path)
    manifest_digest = entry.get("manifest_digest") or entry.get("digest")
    index_digest = record.get("index_digest")
    layout = build_dir / "oci"
    config = entry.get("config_digest")
    if manifest_digest and (layout / "blobs").is_dir():
        # The manifest blob is content-addressed: hash it, then trust the config digest it names.
        blob = layout / "blobs" / "sha256" / manifest_digest.split(":", 1)[1]
        if not blob.is_file():
            raise ImageNotAvailable(f"manifest {manifest_digest} of {platform} is not in {layout}", fix=f"request-pack build {artifact_dir}")
        actual = sha256_digest(blob)
        if actual != manifest_digest:
            raise ImageMismatch(f"{blob}: sha256 is {actual}, the build record says {manifest_digest}")
        named = json.loads(blob.read_bytes())["config"]["digest"]
        if config and config != named:
            raise ImageMismatch(f"{record_path}: config digest {config} differs from {named} named by manifest {manifest_digest}")
        config = named
    if not config:
        raise BadInput("neither a config digest nor an OCI layout to find it", file=record_path, field=f"platforms.{platform}")
    return ImageRef(name, platform, config, manifest_digest, index_digest, layout if layout.is_dir() else None, record_path)


def ensure_image(engine: Engine, ref: ImageRef) -> ImageInfo:
    """The engine's image with id ``ref.config_digest``, loaded from the OCI layout (or the registry) if absent."""
    info = engine.inspect_image(ref.config_digest)
    if info is None:
        if ref.oci_layout is None and ref.source is None:
            raise ImageNotAvailable(f"image {ref.config_digest} ({ref.artifact}, {ref.platform}) is not in {engine.name}",
                                    fix="request-pack build, or load the image")
        source = ref.source or f"oci:{ref.oci_layout}"
        t0 = time.monotonic()
        loaded = engine.load_source(source, ref.platform, f"request-pack/{ref.artifact}:{ref.platform.slug}",
                                    src_args=ref.source_args)
        log.info("loaded %s into %s in %.1f s", source, engine.name, time.monotonic() - t0)
        if loaded != ref.config_digest:
            raise ImageMismatch(f"loading {source} for {ref.platform} gave image {loaded}, not {ref.config_digest}")
        info = engine.inspect_image(ref.config_digest)
        if info is None:
            raise ImageMismatch(f"loading {source} for {ref.platform} did not give image {ref.config_digest}")
    if info.id != ref.config_digest:
        raise ImageMismatch(f"engine image id {info.id} is not the pinned {ref.config_digest}")
    want_variant = ref.platform.variant if ref.platform is Platform.ARMV7 else None
    if info.architecture != ref.platform.architecture or (want_variant and info.variant != want_variant):
        raise ImageMismatch(f"image {ref.config_digest} is {info.os}/{info.architecture}/{info.variant}, not {ref.platform}")
    return info


def check_emulation(platform: Platform, engine_arch: str | None = None) -> None:
    """A non-native platform needs its QEMU binfmt entry (``make setup`` / ``qemu/binfmt.sh`` registers it)."""
    if platform is Platform.native():
        return
    entry = Path("/proc/sys/fs/binfmt_misc") / (platform.qemu_binfmt or "")
    if not entry.is_file() or "enabled" not in entry.read_text():
        raise ToolMissing(f"{platform} needs QEMU emulation and {entry} is not registered", fix="bash qemu/binfmt.sh")


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


# --- running -----------------------------------------------------------------------------------


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


# --- one stage of an artifact ---------------------------------------------------------------------

HARNESS_ENTRYPOINT = ENTRYPOINT
# Where the build puts the model unless the image says otherwise (label or env REQUEST_PACK_MODEL).
DEFAULT_IMAGE_MODEL = MODEL_PATH
EMULATED_SCENARIOS = {"queries": 32, "offline-samples": 64, "warmup": 2}
# QEMU user mode reads QEMU_CPU from the environment of what it runs. Its default CPU, "max",
# is no board's (SVE2, SME, ...); onnxruntime then picks kernels no board of the platform would
# run, and took 1.4-2.4x longer per image under QEMU 10 than as a Cortex-A76 (qemu/README.md).
# An emulated run presents the CPU of a common board instead: Raspberry Pi 5 (arm64), 2 (armv7).
EMULATED_CPU = {Platform.ARM64: "cortex-a76", Platform.ARMV7: "cortex-a7"}


def emulation_env(platform: Platform) -> dict[str, str]:
    """Environment for a run of ``platform`` on this host: QEMU_CPU when it is emulated."""
    if platform is Platform.native() or platform not in EMULATED_CPU:
        return {}
    return {"QEMU_CPU": EMULATED_CPU[platform]}


def _image_env(info: ImageInfo, *names: str) -> str | None:
    for item in info.env:
        key, _, value = item.partition("=")
        if key in names:
            return value
    return None


def image_model_path(info: ImageInfo) -> str:
    """The build sets REQUEST_MODEL (packager/image/plan.py); older test images REQUEST_PACK_MODEL."""
    return _image_env(info, "REQUEST_MODEL", "REQUEST_PACK_MODEL") or DEFAULT_IMAGE_MODEL


def image_config_path(info: ImageInfo) -> str:
    """The manifest sections baked into the image (REQUEST_CONFIG), else the copy the runner writes to the output."""
    return _image_env(info, "REQUEST_CONFIG") or f"{OUT_MOUNT}/{RUN_CONFIG}"


def harness_argv(manifest: Manifest, opts: RunOptions, image_digest: str, model: str,
                 config: str = f"{OUT_MOUNT}/{RUN_CONFIG}") -> list[str]:
    """Arguments of ``python -m packager.harness`` (see packager/harness/__main__.py)."""
    argv = contract_argv(config=config, model=model, out=OUT_MOUNT, stage=opts.stage, image_digest=image_digest,
                         platform=str(opts.platform))
    if opts.dataset_layout is not None:
        argv += ["--layout", opts.dataset_layout]
    if opts.samples is not None:
        argv += ["--samples", str(opts.samples)]
    if opts.mode != "quick":
        argv += ["--mode", opts.mode]
    if opts.platform is not Platform.native():
        argv += ["--execution", "emulated"]
        if not opts.emulated_performance:
            # onnxruntime under QEMU is about 630x slower than native: its latency and throughput describe
            # the emulator. The stage does the accuracy pass (and the reference comparison) only.
            argv += ["--skip-performance", f"emulated {opts.platform} under QEMU user mode: latency and throughput "
                                           "would measure the emulator, not the platform (force with --emulated-performance)"]
        # Under QEMU latency and throughput say nothing about the board (16-30x slower, jittery):
        # keep the scenarios short; accuracy is still computed on every sample.
        # A handful of samples asked for means a handful of queries too: the reference backend
        # takes seconds per image under QEMU.
        run = manifest.run_for(opts.platform)
        cap = opts.samples or run.stages.functional.samples if opts.stage == "functional" else opts.samples
        sizes = {k: (min(v, cap) if cap and k != "warmup" else v) for k, v in EMULATED_SCENARIOS.items()}
        argv += [f"--{k}={v}" for k, v in sizes.items()]
        if cap:
            # Offline cycles the samples into full batches, warm-up and calibration included: a
            # batch of 32 is 64+ emulated inferences (about 8 s each for EfficientNet-Lite0 on
            # onnxruntime under QEMU 10), so no batch is larger than the handful of samples.
            batches = sorted({min(b, cap) for b in run.batch_sizes})
            argv += ["--batch-sizes", ",".join(map(str, batches))]
            if opts.stage == "functional" and "SingleStream" in run.scenarios:
                # Emulated Offline throughput says nothing either, and the accuracy pass already
                # runs a batch: a functional stage under QEMU measures SingleStream only.
                argv += ["--scenarios", "SingleStream"]
    if opts.run_config:
        argv += [RUN_CONFIG_FLAG, opts.run_config.canonical()]
    if opts.resume:
        argv.append("--resume")
    return argv


def check_dataset(manifest: Manifest, opts: RunOptions) -> tuple[DatasetSpec, int]:
    """The data set as the harness will read it, checked on this machine before any container starts.

    The layout is detected from the directory (the manifest's is the first guess) unless
    ``opts.dataset_layout`` names it; the harness runs the same detection on the same files
    under DATA_MOUNT. Every error here names the user's path, not the container's. Returns the
    spec and how many predictions the stage will write (the progress bar's total)."""
    ds = manifest.dataset
    hint = DatasetSpec(opts.dataset, ds.layout, ds.labels, ds.images, ds.synsets, ds.note)
    spec = resolve(opts.dataset, hint, opts.dataset_layout)
    count = opts.samples if opts.samples is not None else getattr(manifest.run_for(opts.platform).stages, opts.stage).samples
    n = len(load_dataset(spec, count=count))
    log.info("dataset %s: %s (%s), %d sample(s) for the %s stage", opts.dataset, spec.layout, spec.chosen, n, opts.stage)
    return spec, n


def host_paths(text: str, mounts: dict[str, str]) -> str:
    """``text`` (the harness's words) with the container's mount points replaced by the host's paths."""
    for inside, host in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(rf"(?<![\w/.-]){re.escape(inside)}(?=/|\b|$)", lambda m, h=host: h, text)
    return text


def run_stage(manifest: Manifest, ref: ImageRef, engine: Engine, opts: RunOptions, *,
              progress: ProgressFn | None = None, on_start: Callable[[str], None] | None = None) -> RunResult:
    """Run the harness in the image for one stage; ``StageFailed`` names the stage when it does not pass."""
    if opts.stage not in ("functional", "full"):
        raise BadInput(f"stage {opts.stage!r} is not 'functional' or 'full'", field="--stage")
    # The platform's run.knobs under the asked ones; a knob the framework does not apply is refused here,
    # before a container starts.
    opts = replace(opts, run_config=manifest.run_config_for(opts.platform, opts.run_config))
    opts.run_config.check_applies(manifest.framework_for(opts.platform).name)
    opts.out.mkdir(parents=True, exist_ok=True)
    # Always written: it says what the stage was asked to do, and images without a baked config read it.
    # the platform's own framework (docs/components.md): the harness reads framework alone
    platform_manifest = manifest.for_platform(opts.platform).model_dump(mode="json")
    (opts.out / RUN_CONFIG).write_text(json.dumps(platform_manifest, indent=2, sort_keys=True) + "\n")
    digest = ref.manifest_digest or ref.config_digest
    _, total = check_dataset(manifest, opts)
    result = run_in_sandbox(
        engine, ref, lambda info: harness_argv(manifest, opts, digest, image_model_path(info), image_config_path(info)), opts,
        declared_devices=manifest.devices, progress=progress, total=total,
        on_start=on_start, entrypoint=HARNESS_ENTRYPOINT)
    if result.exit_code != 0:
        tail = host_paths(_log_tail(result.container_log), result.record.get("mounts") or {})
        hint = " (killed; rerun with --resume to continue)" if result.exit_code in (137, 143) else ""
        raise StageFailed(opts.stage, f"the harness exited with {result.exit_code}{hint}: {tail}")
    if not (opts.out / METRICS_NAME).is_file():
        raise StageFailed(opts.stage, f"the harness wrote no {METRICS_NAME}; see {result.container_log}")
    return result


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "empty log"
