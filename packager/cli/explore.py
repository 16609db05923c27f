"""``explore``: a design-space sweep of one artifact; and the run-config options ``run``/``evaluate`` share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from packager.cli.common import ARTIFACT_HELP, BOARD_HELP, BOARD_URL, console, parse_platform, progress_bar, progress_fn

commands = typer.Typer()

SET_HELP = ("A run-time knob, run.KNOB=VALUE (threads, inter_threads, batch, opt_level, execution_provider, target); "
            "repeatable. The image is not rebuilt; the knobs are recorded in the signed result.")
RUN_CONFIG_HELP = "A YAML or JSON file of run-time knobs (KNOB: VALUE); --set overrides single knobs."


def run_config_from(sets: list[str], file: Optional[Path]) -> Any:
    """The run config of ``--run-config FILE`` and ``--set run.KNOB=VALUE`` (the latter wins)."""
    from packager.runconfig import RunConfig, from_mapping, from_sets
    from packager.yamlsafe import load_yaml

    base = from_mapping(load_yaml(file), where=str(file)) if file is not None else RunConfig()
    return base.merged(from_sets(sets))


@commands.command("explore")
def explore_cmd(
    artifact: Path = typer.Argument(..., help=ARTIFACT_HELP),
    space: Path = typer.Option(..., "--space", help="Space file (YAML): run:/build: knob lists (cross product) or points: (a listed subset), stage:."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset directory (default $REQUEST_PACK_SAMPLE or ../shared/data/imagenet-sample)."),
    dataset_layout: Optional[str] = typer.Option(None, "--dataset-layout", metavar="auto|labels-tsv|ilsvrc2012-val", help="The data set's layout (default: detected)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep directory: the journal (points.jsonl) and each point's results (default explore/<artifact>-<space sha256[:12]>)."),
    board: str = typer.Option(BOARD_URL, "--board", help=BOARD_HELP),
    key: Optional[Path] = typer.Option(None, "--key", help="Evaluator's private key (default: this machine's evaluator key)."),
    platform: Optional[str] = typer.Option(None, "--platform", help="Platform to evaluate (default: this machine's)."),
    engine: str = typer.Option("docker", "--engine", help="docker or podman."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="Where build/<name>/ is (default: build/ beside artifacts/)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run again the points an earlier run recorded as failed."),
    farm: Optional[str] = typer.Option(None, "--farm", help="slurm: each point a farm job on a Slurm board (key: image, platform, stage, data set, run config); waits, then verifies and publishes."),
    registry: Optional[str] = typer.Option(None, "--registry", metavar="HOST:PORT", help="With --farm: the registry the boards pull the image from, by digest."),
    partition: Optional[str] = typer.Option(None, "--partition", help="With --farm slurm: the Slurm partition."),
) -> None:
    """Evaluate every point of a design space; each verified result is published to the board as one sweep."""
    import hashlib

    from rich import box
    from rich.table import Table

    from packager.explore import Options, explore, iter_frontier, load_space, summary
    from packager.manifest import load_manifest
    from packager.repo import default_sample_dataset

    spec = load_space(space)
    name = load_manifest(artifact).name
    out = out or Path("explore") / f"{name}-{hashlib.sha256(spec.text.encode()).hexdigest()[:12]}"
    opts = Options(dataset=dataset or default_sample_dataset(), out=out, board=board, key=key,
                   platform=parse_platform(platform), engine=engine, build_root=build_root,
                   dataset_layout=dataset_layout, retry_failed=retry_failed, farm=farm, registry=registry,
                   partition=partition)
    with progress_bar() as bar:
        sweep_task = bar.add_task(f"sweep of {name}: {len(spec.points)} point(s)", total=len(spec.points))

        def report(event: str, point: Any, outcome: Any) -> None:
            if event == "start":
                bar.console.print(f"point {point.index + 1}/{len(spec.points)}: {escape(point.label())}")
                return
            detail = f"top-1 {outcome.top1:.4f}" if outcome.top1 is not None else escape(outcome.error or "")
            bar.console.print(f"  {event}: {escape(point.label())} {detail}")
            bar.advance(sweep_task)

        result = explore(artifact, spec, opts, report=report,
                         progress=lambda stage: progress_fn(bar, f"  {stage}"))
    columns, rows, notes = summary(result, spec.stage, opts.dataset)
    # Light borders, and cells that fold rather than end in "…": a cut knob or header word ("SingleStre…")
    # would no longer say what a point or a figure is.
    table = Table(title=f"sweep {result.sweep_id} of {result.artifact} ({len(result.image_digests)} image digest(s), "
                        f"{result.rebuilds} rebuild(s), {result.seconds:.0f} s)", caption=escape("\n".join(notes)),
                  caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        table.add_column(col, justify="left" if col in ("knobs", "status", "class") else "right", overflow="fold")
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)
    for cls, p in iter_frontier(result):
        console.print(f"frontier ({escape(cls)}): {escape(' '.join(f'{k}={v}' for k, v in p.knobs.items()) or 'defaults')} "
                      f"({p.bundle_digest})")
    failed = [o for o in result.outcomes if o.status == "failed"]
    console.print(f"journal {escape(str(result.out / 'points.jsonl'))}; board {escape(board)} sweep {result.sweep_id}"
                  + (f"; [red]{len(failed)} failed[/red]" if failed else ""))
    if failed:
        raise typer.Exit(1)
