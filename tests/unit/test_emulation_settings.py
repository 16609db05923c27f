"""What the runner hands an emulated run: QEMU_CPU naming a board's CPU, and Offline batches no
larger than the handful of samples (see qemu/README.md). No daemon, no QEMU."""

from __future__ import annotations

from pathlib import Path

from packager.manifest import load_manifest
from packager.platforms import Platform
from packager.run.runner import EMULATED_CPU, RunOptions, emulation_env, harness_argv

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "manifest-valid"


def test_emulated_platforms_get_a_board_cpu_and_the_native_one_nothing():
    native = Platform.native()
    assert emulation_env(native) == {}
    for plat in Platform:
        if plat is not native:
            assert emulation_env(plat) == {"QEMU_CPU": EMULATED_CPU[plat]}
    # Names QEMU 10 knows for these targets (qemu-aarch64 -cpu help, qemu-arm -cpu help).
    assert EMULATED_CPU[Platform.ARM64] == "cortex-a76" and EMULATED_CPU[Platform.ARMV7] == "cortex-a7"


def _argv(plat: Platform, samples: int | None, tmp_path: Path) -> list[str]:
    manifest = load_manifest(MANIFEST)
    opts = RunOptions(stage="functional", dataset=tmp_path, out=tmp_path, platform=plat, samples=samples)
    return harness_argv(manifest, opts, "sha256:" + "a" * 64, "/opt/request/model.onnx")


def test_emulated_offline_batches_are_capped_by_the_samples(tmp_path):
    manifest = load_manifest(MANIFEST)
    native = Platform.native()
    other = next(p for p in Platform if p is not native)
    assert "--batch-sizes" not in _argv(native, 3, tmp_path)
    argv = _argv(other, 3, tmp_path)
    batches = [int(b) for b in argv[argv.index("--batch-sizes") + 1].split(",")]
    assert batches == sorted({min(b, 3) for b in manifest.run.batch_sizes})
    assert max(batches) <= 3


def test_emulated_functional_stage_measures_single_stream_only(tmp_path):
    native = Platform.native()
    other = next(p for p in Platform if p is not native)
    assert "--scenarios" not in _argv(native, 3, tmp_path)
    argv = _argv(other, 3, tmp_path)
    assert argv[argv.index("--scenarios") + 1] == "SingleStream"


def _opts_argv(plat: Platform, tmp_path: Path, **kw) -> list[str]:
    manifest = load_manifest(MANIFEST)
    opts = RunOptions(stage="full", dataset=tmp_path, out=tmp_path, platform=plat, **kw)
    return harness_argv(manifest, opts, "sha256:" + "a" * 64, "/opt/request/model.onnx")


def test_emulated_runs_skip_the_performance_scenarios_by_default_and_say_why(tmp_path):
    native = Platform.native()
    other = next(p for p in Platform if p is not native)
    argv = _opts_argv(other, tmp_path)
    assert argv[argv.index("--execution") + 1] == "emulated"
    reason = argv[argv.index("--skip-performance") + 1]
    assert "QEMU" in reason and "--emulated-performance" in reason
    forced = _opts_argv(other, tmp_path, emulated_performance=True)
    assert "--skip-performance" not in forced and forced[forced.index("--execution") + 1] == "emulated"
    plain = _opts_argv(native, tmp_path)
    assert "--execution" not in plain and "--skip-performance" not in plain and "--mode" not in plain


def test_submission_mode_reaches_the_harness(tmp_path):
    argv = _opts_argv(Platform.native(), tmp_path, mode="submission")
    assert argv[argv.index("--mode") + 1] == "submission"


def test_the_harness_accepts_what_the_runner_passes(tmp_path):
    """The runner's emulated options parse in the harness and empty its scenarios, recording why."""
    from packager.harness.__main__ import parser
    from packager.harness.config import build_config

    native = Platform.native()
    other = next(p for p in Platform if p is not native)
    argv = _opts_argv(other, tmp_path)
    args = parser().parse_args(argv)
    manifest = load_manifest(MANIFEST)
    cfg = build_config(manifest.model_dump(mode="json"), model_path=args.model, dataset_dir=args.dataset, out_dir=args.out,
                       cache_dir=tmp_path, stage=args.stage, execution=args.execution,
                       performance_skipped=args.performance_skipped)
    assert cfg.scenarios == () and cfg.execution == "emulated" and "QEMU" in cfg.performance_skipped
