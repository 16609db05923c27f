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
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    frozen: bool = typer.Option(False, "--frozen", help="Never resolve or download: check the lock is current and every locked file is cached."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Pin the sha256 of the dataset's labels file and of each image."),
    platform: str = typer.Option("", "--platform", metavar="P,...", help="Resolve only these platforms (others keep their entries)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
) -> None:
    """Pin every input (Debian packages, wheels, model, dataset, templates) by sha256 in request.lock.

    Resolves against the live Debian mirror and PyPI (the mirror moves: the lock,
    not the mirror, is the pin) and stores every file in the cache, verified.
    --frozen never resolves and never touches the network.
    """
    from packager.cache import Cache
    from packager.inputs.lock import lock

    platforms = list(parse_platforms(platform))
    result = lock(path, frozen=frozen, dataset=dataset, platforms=platforms or None, cache=Cache.open(cache))
    console.print(lock_table(result))


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
