"""``tune``: MetaSchedule tuning of a TVM artifact in its own image; a derived artifact pins the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from packager.cli.common import ARTIFACT_HELP, console, parse_platform

commands = typer.Typer()


@commands.command()
def tune(
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    trials: int = typer.Option(..., "--trials", help="MetaSchedule trials (max_trials_global) per batch size of run.batch_sizes."),
    seed: int = typer.Option(..., "--seed", help="The search's random seed, recorded in the database."),
    out: Path = typer.Option(Path("tune-out"), "--out", help="Output directory: the database, the container's log, run.json."),
    name: Optional[str] = typer.Option(None, "--name", help="The tuned artifact's name (default: NAME-tuned beside the parent)."),
    tvm_target: Optional[str] = typer.Option(None, "--tvm-target", help="TVM target as JSON, e.g. '{\"kind\": \"llvm\", \"mcpu\": \"znver3\"}' "
                                                                         "(default: the manifest's framework.options.target)."),
    no_derive: bool = typer.Option(False, "--no-derive", help="Only tune and cache the database; write no artifact."),
    platform: Optional[str] = typer.Option(None, "--platform", help="Platform to tune (default: this machine's)."),
    target: Optional[str] = typer.Option(None, "--target", help="Where it runs: local (default) or ssh://user@board[:port]."),
    engine: str = typer.Option("docker", "--engine", help="docker or podman."),
) -> None:
    """Tune the TVM build with MetaSchedule on the machine (or board) it runs on, inside the artifact's image
    (network none); the database goes to --out and the cache, and a derived artifact pins it by sha256."""
    from packager.tune import tune as run_tune

    wanted = json.loads(tvm_target) if tvm_target and tvm_target.lstrip().startswith("{") else tvm_target
    result = run_tune(path, trials=trials, seed=seed, out=out, name=name, platform=parse_platform(platform), engine=engine,
                      target=target, tvm_target=wanted, derive_artifact=not no_derive)
    db = result.database
    console.print(f"[green]tuned[/green] in {result.wall_s:.0f} s, image {result.image_digest[:19]}…: {db.describe()}",
                  highlight=False, soft_wrap=True)
    console.print(f"database {result.out / 'tuning-database.json'} (sha256 {db.sha256}, {len(db.records)} records), cached",
                  highlight=False, soft_wrap=True)
    if result.derived:
        console.print(f"[green]ok[/green] {result.derived}: `request-pack evaluate {result.derived}` builds and evaluates it tuned",
                      highlight=False, soft_wrap=True)
