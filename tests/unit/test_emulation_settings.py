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
