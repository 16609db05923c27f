"""``validate``, ``schema``, ``lock``, ``fetch``, ``convert``: the manifest and its pinned inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from packager.cli.common import ARTIFACT_HELP, CACHE_HELP, console, parse_platforms

commands = typer.Typer()


@commands.command()
def validate(path: Path = typer.Argument(..., help=ARTIFACT_HELP)) -> None:
    """Check a manifest against the schema."""
    from packager.manifest import load_manifest

    manifest = load_manifest(path)
    console.print(f"[green]ok[/green] {manifest.name} {manifest.version}: {', '.join(p.value for p in manifest.platforms)}")


@commands.command()
def schema() -> None:
    """Print the manifest's JSON Schema."""
    from packager.manifest import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")


def lock_table(result: Any) -> Any:
    from rich.table import Table

    title = f"{result.path} ({'verified, frozen' if result.frozen else 'written' if result.changed else 'unchanged'})"
    table = Table(title=title, title_justify="left")
    for col in ("platform", "debs", "wheels", "bytes"):
        table.add_column(col, justify="left" if col == "platform" else "right")
    for row in result.summary:
        table.add_row(row.platform, str(row.debs), str(row.wheels), f"{row.bytes:,}")
    return table


@commands.command("lock")
def lock_cmd(
    paths: list[Path] = typer.Argument(None, help="Artifact directories (or their request.yaml); --check and --stale default to every one under ./artifacts."),
    frozen: bool = typer.Option(False, "--frozen", help="Never resolve or download: check the lock is current and every locked file is cached."),
    check: bool = typer.Option(False, "--check", help="Only say which locks are stale (a manifest or a component changed); exit 1 if any is."),
    stale: bool = typer.Option(False, "--stale", help="Re-lock only the stale ones (after a component changed: every artifact using it)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Pin the sha256 of the dataset's labels file and of each image."),
    platform: str = typer.Option("", "--platform", metavar="P,...", help="Resolve only these platforms (others keep their entries)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
) -> None:
    """Pin every input (Debian packages, wheels, model, dataset, templates) by sha256 in request.lock.

    Resolves against the live Debian mirror and PyPI (the mirror moves: the lock,
    not the mirror, is the pin) and stores every file in the cache, verified.
    --frozen never resolves and never touches the network. The lock records every
    component file the manifest uses (docs/components.md): --check lists the stale.
    """
    from packager.cache import Cache
    from packager.inputs.lock import freshness, lock

    if check and (frozen or stale):
        raise typer.BadParameter("--check only reads: not with --frozen or --stale")
    paths = list(paths or []) or (_every_artifact() if check or stale else [])
    if not paths:
        raise typer.BadParameter("give at least one artifact (or --check / --stale for all of them)")
    if check or stale:
        states = [freshness(p) for p in paths]
        for state in states:
            mark = "[yellow]stale[/yellow]" if state.stale else "[green]fresh[/green]"
            console.print(f"{mark} {state.artifact}" + "".join(f"\n  {why}" for why in state.stale), highlight=False, soft_wrap=True)
        if check:
            if any(s.stale for s in states):
                raise typer.Exit(1)
            return
        paths = [s.artifact for s in states if s.stale]
    platforms = list(parse_platforms(platform))
    for p in paths:
        result = lock(p, frozen=frozen, dataset=dataset, platforms=platforms or None, cache=Cache.open(cache), keep_resolved=stale)
        console.print(lock_table(result))


def _every_artifact() -> list[Path]:
    from packager.manifest import MANIFEST_NAME
    from packager.repo import REPO_ROOT

    root = Path("artifacts") if Path("artifacts").is_dir() else REPO_ROOT / "artifacts"
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST_NAME}"))


@commands.command()
def fetch(
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    from_file: Optional[Path] = typer.Option(
        None, "--from", metavar="ARCHIVE_OR_DIR",
        help="The only source: an archive from `request-pack archive`, or a directory of loose files (found by "
             "sha256); nothing else is contacted. A model file (or its source) instead adds to the downloads."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
) -> None:
    """Fill the cache with every file an existing lock pins, verified.

    Without --from, each missing file comes from its recorded locations in order (a .deb's pool URL,
    then Debian's snapshot service by content), transient failures retried and partial files resumed.
    """
    from packager.cache import Cache
    from packager.inputs.lock import fetch as fill

    result = fill(path, from_file, cache=Cache.open(cache))
    console.print(lock_table(result))


@commands.command()
def convert(
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
    allow_other_versions: bool = typer.Option(
        False, "--allow-other-versions", help="Run even if installed tools differ from the recipe's pins (the hash check still applies)."
    ),
) -> None:
    """Regenerate the model file from its pinned source with the manifest's recipe and check its sha256."""
    from packager.cache import Cache
    from packager.inputs.convert import convert as run_recipe

    result = run_recipe(path, cache=Cache.open(cache) if cache else None, allow_other_versions=allow_other_versions)
    console.print(f"[green]ok[/green] {result.recipe}: sha256 {result.sha256} reproduced\n{result.path}", highlight=False, soft_wrap=True)
