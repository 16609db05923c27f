"""Run one stage of an artifact's image in a sandbox and collect its outputs.

``run_stage`` is the whole of ``request-pack run``:

1. the image of the platform, pinned by digest from the build record
   (``run/image.py``: ``image_from_record``, ``ensure_image``);
2. the run config: the platform's ``run.knobs`` under the asked ones, refused when
   the platform's framework does not apply one; the data set checked on this machine;
3. the harness's arguments (``harness_argv``): the stage, the platform's run
   settings, short scenarios under emulation, the run config as one argument;
4. the container in the sandbox (``run/sandbox.py``: ``run_in_sandbox``), its
   output directory prepared and, with ``--resume``, repaired;
5. a stage that exits non-zero or writes no metrics is a ``StageFailed`` naming it.

The names importers use (``RunOptions``, ``ImageRef``, ``run_in_sandbox``, ...)
stay importable from here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from packager.contract import ENTRYPOINT, MODEL_PATH, OUT_MOUNT, RUN_CONFIG, SANDBOX  # noqa: F401  (SANDBOX: tests)
from packager.contract import harness_argv as contract_argv
from packager.engine import Engine
from packager.errors import BadInput, StageFailed
from packager.harness.dataset import DatasetSpec, load_dataset, resolve
from packager.manifest import Manifest
from packager.platforms import Platform
from packager.results import METRICS_NAME
from packager.run.image import (  # noqa: F401  (importers of runner)
    DEFAULT_IMAGE_MODEL,
    EMULATED_CPU,
    RECORD_NAME,
    ImageRef,
    check_emulation,
    emulation_env,
    ensure_image,
    image_config_path,
    image_from_record,
    image_model_path,
)
from packager.run.sandbox import (  # noqa: F401  (importers of runner)
    LOG_DIR,
    RUN_RECORD,
    TENSOR_CACHE_ENV,
    TENSOR_VOLUME,
    ProgressFn,
    ResumeState,
    RunOptions,
    RunResult,
    build_spec,
    count_lines,
    prepare_output,
    repair_predictions,
    run_container,
    run_in_sandbox,
    tensor_cache_dir,
)
from packager.runconfig import ARGV_FLAG as RUN_CONFIG_FLAG

log = logging.getLogger(__name__)

HARNESS_ENTRYPOINT = ENTRYPOINT
EMULATED_SCENARIOS = {"queries": 32, "offline-samples": 64, "warmup": 2}


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
