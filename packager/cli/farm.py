"""``farm submit|status|collect``: many evaluations through one ``Farm`` interface, picked by --scheduler."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from packager.cli.common import (
    BOARD_HELP,
    BOARD_URL,
    LABELS_HELP,
    TRUST_DIR_HELP,
    TRUST_HELP,
    console,
    parse_platforms,
)

farm_app = typer.Typer(help="Evaluate many artifacts on a board farm (Slurm) or a cluster (Kubernetes Jobs).",
                       no_args_is_help=True)

SCHEDULER_HELP = "slurm or kubernetes."


@farm_app.command("submit")
def farm_submit(
    artifacts: list[Path] = typer.Argument(..., help="Artifact directories (or their request.yaml)."),
    scheduler: str = typer.Option("slurm", "--scheduler", help=SCHEDULER_HELP),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition (default: the cluster's)."),
    stage: str = typer.Option("all", "--stage", help="functional, full or all."),
    platform: list[str] = typer.Option([], "--platform", help="Only these platforms (repeatable); default: each manifest's."),
    registry: Optional[str] = typer.Option(None, "--registry", metavar="HOST:PORT", help="Registry the boards pull images from, by digest."),
    results: Path = typer.Option(Path("farm-results"), "--results", help="Shared results location: one directory per job key."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset directory as the boards see it (default $REQUEST_PACK_SAMPLE or ../shared/data/imagenet-sample)."),
    key: Optional[Path] = typer.Option(None, "--key", help="Evaluator's signing key the boards use (NAME.key beside NAME.pub)."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="Where build/<name>/ is (default: build/ beside artifacts/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="kubernetes: write the Job manifests only."),
    namespace: str = typer.Option("request-pack", "--namespace", help="kubernetes: namespace of the Jobs."),
    fpga_resource: Optional[str] = typer.Option(None, "--fpga-resource", help="kubernetes: the FPGA device plugin's resource name (kubectl describe node)."),
    accelerator_resource: Optional[str] = typer.Option(None, "--accelerator-resource", help="kubernetes: the accelerator's device-plugin resource name."),
) -> None:
    """Build and push each image by digest, plan one job per (artifact, platform, device need), submit."""
    from packager.errors import BadInput
    from packager.farm import FarmOptions, open_farm
    from packager.farm import jobs as farm_jobs
    from packager.farm.images import ensure_images

    farm = open_farm(scheduler, FarmOptions(
        results=results, dataset=dataset, key=key, build_root=build_root, partition=partition, dry_run=dry_run,
        namespace=namespace, fpga_resource=fpga_resource, accelerator_resource=accelerator_resource))
    if not registry:
        raise BadInput("a farm pulls images by digest from a registry: pass --registry HOST:PORT", field="--registry")
    if stage not in farm_jobs.STAGES:
        raise BadInput(f"stage {stage!r} is not one of {', '.join(farm_jobs.STAGES)}", field="--stage")
    plats = parse_platforms(platform) or None
    farm.check(artifacts, plats)  # before building: an impossible job fails now
    images = ensure_images(artifacts, registry, build_root=build_root, platforms=plats)
    jobs = farm_jobs.plan(artifacts, images, stage=stage, platforms=plats, dataset=farm.dataset)  # type: ignore[arg-type]
    for s in farm.submit(jobs):
        what = {"submitted": f"[green]submitted[/green] as job {s.job_id}", "done": "[blue]done[/blue] (verified result)",
                "queued": f"[yellow]queued[/yellow] already as job {s.job_id}", "written": "wrote",
                "applied": "applied"}[s.action]
        if s.action in ("written", "applied"):
            console.print(f"{what} {escape(str(s.path))}")
        else:
            console.print(f"{what}: {s.job.name} ({s.job.artifact}, {s.job.platform}, {s.job.stage}) key {s.job.key[:12]}")


@farm_app.command("status")
def farm_status(
    results: Path = typer.Option(Path("farm-results"), "--results", help="Results location given to submit (kubernetes: the Jobs' outputs copied off the results claim)."),
    scheduler: str = typer.Option("slurm", "--scheduler", help=SCHEDULER_HELP),
    namespace: str = typer.Option("request-pack", "--namespace", help="kubernetes: namespace of the Jobs."),
) -> None:
    """One row per job: the scheduler's state, board, elapsed, and how far its results directory is."""
    from rich.table import Table

    from packager.farm import FarmOptions, open_farm

    farm = open_farm(scheduler, FarmOptions(results=results, namespace=namespace))
    table = Table(title=f"farm jobs in {results}")
    for col in ("artifact", "platform", "key", "id", "state", "board", "elapsed", "stage", "restarts", "verified"):
        table.add_column(col, overflow="fold")
    for r in farm.status():
        table.add_row(r.artifact, r.platform, r.key[:8], r.job_id or "-", r.state, r.node or "-",
                      f"{r.elapsed_s:.0f} s" if r.elapsed_s is not None else "-", r.stage, str(r.restarts),
                      "yes" if r.verified else "no")
    console.print(table)


@farm_app.command("collect")
def farm_collect(
    results: Path = typer.Option(Path("farm-results"), "--results", help="Results location given to submit (kubernetes: the Jobs' outputs copied off the results claim, one directory per job name)."),
    board: str = typer.Option(BOARD_URL, "--board", help=BOARD_HELP),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help=TRUST_DIR_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help=LABELS_HELP),
    scheduler: str = typer.Option("slurm", "--scheduler", help="slurm (bundles signed on the boards) or kubernetes (sealed here first)."),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="kubernetes: the directory of *.job.yaml farm submit wrote."),
    key: Optional[Path] = typer.Option(None, "--key", help="kubernetes: evaluator's signing key to seal with (NAME.key beside NAME.pub)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="kubernetes: the dataset the pods read (default $REQUEST_PACK_SAMPLE or ../shared/data/imagenet-sample)."),
    artifacts: list[Path] = typer.Option([], "--artifacts", help="kubernetes: artifact directories, or directories of them, to find each Job's request.yaml in (default: ./artifacts); repeatable."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="kubernetes: where build/<name>/ is (default: build/ beside artifacts/)."),
) -> None:
    """Verify every bundle, publish the good ones, report the bad and the missing ones with the reason.

    With --scheduler kubernetes, each Job's outputs are first sealed (min_top1, image against the
    build record, bundled, signed with --key, verified), once: a sealed Job is not sealed again."""
    from packager.errors import CheckFailed
    from packager.farm import FarmOptions, open_farm
    from packager.farm.collect import summary

    farm = open_farm(scheduler, FarmOptions(results=results, dataset=dataset, key=key, build_root=build_root, jobs=jobs,
                                            artifacts=tuple(artifacts), trust=tuple(trust), trust_dir=trust_dir))
    rows = []
    for c in farm.collect(board, labels=labels):
        rows.append(c)
        where = escape(str(c.bundle or c.job_dir))
        if c.ok:
            state = "[green]published[/green]" if c.outcome == "published" else "[yellow]already on the board[/yellow]"
            console.print(("[green]sealed[/green] and " if c.sealed else "") + f"{state} {where} ({c.artifact}, {c.platform}, top-1 {c.top1:.4f})"
                          + (f" [yellow]({escape(c.reason)})[/yellow]" if c.reason else ""))
        else:
            console.print(f"[red]{c.outcome}[/red] {where}: {escape(c.reason)}")
    counts = summary(rows)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if counts.get("bad"):
        raise CheckFailed(f"{counts['bad']} {farm.failures} and were not published")
