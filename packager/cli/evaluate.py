"""``run`` and ``evaluate``: an artifact's image in the sandbox, one stage or the evaluator's whole chain."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from packager.cli.common import (
    ARTIFACT_HELP,
    console,
    parse_platform,
    progress_bar,
    progress_fn,
)
from packager.cli.explore import RUN_CONFIG_HELP, SET_HELP, run_config_from

commands = typer.Typer()


def _mode(mode: str) -> str:
    from packager.errors import BadInput

    if mode not in ("quick", "submission"):
        raise BadInput(f"--mode {mode!r}: expected quick or submission", field="--mode")
    return mode


@commands.command("run")
def run_cmd(
    artifact: Path = typer.Argument(..., help=ARTIFACT_HELP),
    stage: str = typer.Option("functional", "--stage", help="functional or full."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset directory (mounted read-only)."),
    dataset_layout: Optional[str] = typer.Option(None, "--dataset-layout", metavar="auto|labels-tsv|ilsvrc2012-val", help="The data set's layout (default: detected from the directory; recorded in the result)."),
    out: Path = typer.Option(..., "--out", help="Output directory (the only writable mount)."),
    platform: Optional[str] = typer.Option(None, "--platform", help="linux/amd64, linux/arm64 or linux/arm/v7 (non-native runs under QEMU)."),
    device: list[str] = typer.Option([], "--device", help="/dev/NODE[:/dev/NAME], vendor.com/class=name (CDI) or gpu; repeatable."),
    target: Optional[str] = typer.Option(None, "--target", help="local (default) or ssh://user@host[:port]."),
    engine: str = typer.Option("docker", "--engine", help="docker or podman."),
    resume: bool = typer.Option(False, "--resume", help="Continue a run whose predictions.jsonl is in --out."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Override the stage's sample count."),
    cdi_spec_dir: list[Path] = typer.Option([], "--cdi-spec-dir", help="CDI spec directories (default /etc/cdi, /var/run/cdi)."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="Where build/<name>/build-record.json is (default: build/ beside artifacts/)."),
    mode: str = typer.Option("quick", "--mode", help="quick (any data set; never an MLPerf submission) or submission (LoadGen from mlperf.conf + user.conf, official seeds, 600 s, >= 1024 images)."),
    emulated_performance: bool = typer.Option(False, "--emulated-performance", help="Also run the performance scenarios under QEMU (skipped by default: they measure the emulator)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    run_config: Optional[Path] = typer.Option(None, "--run-config", help=RUN_CONFIG_HELP),
) -> None:
    """Run one stage of an artifact's image, by digest, in the sandbox."""
    from packager.engine import get_engine
    from packager.manifest import load_manifest
    from packager.platforms import Platform
    from packager.run.devices import DEFAULT_CDI_DIRS
    from packager.run.runner import RunOptions, image_from_record, run_stage

    plat = parse_platform(platform) or Platform.native()
    manifest = load_manifest(artifact)
    artifact_dir = artifact.parent if artifact.is_file() else artifact
    ref = image_from_record(artifact_dir, manifest.name, plat, build_root)
    opts = RunOptions(stage=stage, dataset=dataset, out=out, platform=plat, devices=tuple(device), resume=resume,
                      samples=samples, cdi_dirs=tuple(cdi_spec_dir) or DEFAULT_CDI_DIRS, mode=_mode(mode),
                      emulated_performance=emulated_performance, dataset_layout=dataset_layout,
                      run_config=run_config_from(set_, run_config))
    with progress_bar() as bar:
        result = run_stage(manifest, ref, get_engine(engine, target), opts, progress=progress_fn(bar, f"{stage} {plat}"))
    console.print(f"[green]ok[/green] {stage} stage of {manifest.name} on {plat} in {result.wall_s:.1f} s; "
                  f"outputs in {escape(str(out))}, log {escape(str(result.container_log))}")


@commands.command("evaluate")
def evaluate_cmd(
    artifact: Path = typer.Argument(..., help=ARTIFACT_HELP),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset directory (default $REQUEST_PACK_SAMPLE or ../shared/data/imagenet-sample)."),
    dataset_layout: Optional[str] = typer.Option(None, "--dataset-layout", metavar="auto|labels-tsv|ilsvrc2012-val", help="The data set's layout (default: detected from the directory; recorded in the result)."),
    key: Optional[Path] = typer.Option(None, "--key", help="Evaluator's Ed25519 private key (NAME.key beside NAME.pub); default ~/.config/request-pack/keys/evaluator.key, made once."),
    out: Path = typer.Option(Path("results"), "--out", help="Result directory: functional/, full/ and the signed bundle."),
    platform: Optional[str] = typer.Option(None, "--platform", help="Platform to evaluate (default: this machine's)."),
    device: list[str] = typer.Option([], "--device", help="As for run; repeatable."),
    target: Optional[str] = typer.Option(None, "--target", help="local (default) or ssh://user@host[:port]."),
    engine: str = typer.Option("docker", "--engine", help="docker or podman."),
    stage: str = typer.Option("all", "--stage", help="functional, full or all; the last stage run is signed and verified."),
    resume: bool = typer.Option(False, "--resume", help="Continue each stage's predictions.jsonl in --out (a requeued job)."),
    image: Optional[str] = typer.Option(None, "--image", metavar="HOST/REPO@sha256:DIGEST", help="Pull this index or manifest from a registry, by digest, instead of building."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="Where build/<name>/build-record.json is (default: build/ beside artifacts/)."),
    mode: str = typer.Option("quick", "--mode", help="quick (any data set; never an MLPerf submission) or submission (LoadGen from mlperf.conf + user.conf, official seeds, 600 s, >= 1024 images)."),
    emulated_performance: bool = typer.Option(False, "--emulated-performance", help="Also run the performance scenarios under QEMU (skipped by default: they measure the emulator)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    run_config: Optional[Path] = typer.Option(None, "--run-config", help=RUN_CONFIG_HELP),
) -> None:
    """Build-or-pull, digest check, functional stage, full stage, sign, verify, summary."""
    from rich.table import Table

    from packager.pipeline import evaluate
    from packager.repo import default_sample_dataset

    with progress_bar() as bar:
        ev = evaluate(artifact, dataset or default_sample_dataset(), out, key=key, platform=parse_platform(platform),
                      engine=engine, target=target, devices=tuple(device), progress=lambda stage: progress_fn(bar, stage),
                      stages=stage, resume=resume, image=image, build_root=build_root, mode=_mode(mode),
                      emulated_performance=emulated_performance, dataset_layout=dataset_layout,
                      run_config=run_config_from(set_, run_config))
    knobs = run_config_from(set_, run_config)
    table = Table(title=f"{ev.artifact} on {ev.platform} (image {ev.image.manifest_digest or ev.image.config_digest}; "
                        f"run config: {knobs.label()})")
    multistream = any(s.multistream_p99_ms is not None for s in ev.stages)
    cols = ("stage", "samples", "top-1", "top-5", "min top-1", "SingleStream p50 ms",
            *(("MultiStream p99 ms/query of 8",) if multistream else ()), "Offline img/s", "wall s")
    for col in cols:
        table.add_column(col, justify="right" if col != "stage" else "left")
    for s in ev.stages:
        ms = ((f"{s.multistream_p99_ms:.2f}" if s.multistream_p99_ms is not None else "-",) if multistream else ())
        table.add_row(s.stage, str(s.samples), f"{s.top1:.4f}", f"{s.top5:.4f}", f"{s.min_top1:.2f}",
                      f"{s.p50_ms:.2f}" if s.p50_ms is not None else "-", *ms,
                      f"{s.images_per_s:.1f}" if s.images_per_s is not None else "-", f"{s.wall_s:.1f}")
    console.print(table)
    console.print(f"[green]signed[/green] with key {ev.keyid[:16]} and [green]verified[/green] in {ev.verify_seconds:.2f} s: "
                  f"{escape(str(ev.bundle))}")
    console.print("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in ev.timings.items()))
