"""``show`` and ``derive``: a manifest's components resolved, and new artifacts derived from old ones."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from packager.cli.common import ARTIFACT_HELP, CACHE_HELP, console

commands = typer.Typer()


@commands.command()
def show(path: Path = typer.Argument(..., help=ARTIFACT_HELP),
         files: bool = typer.Option(False, "--files", help="Print the component and parent files it used, by sha256, instead."),
         platform: Optional[str] = typer.Option(None, "--platform", help="Print one platform's view instead: its framework "
                                                "and run settings in framework and run (the request.json of its image).")) -> None:
    """Print the resolved manifest (every use: and parent: applied) as YAML, keys in schema order."""
    from packager.cli.common import parse_platform
    from packager.errors import BadInput
    from packager.manifest import load_composed, resolved_yaml

    manifest, resolved = load_composed(path)
    if files:
        for name, sha in sorted(resolved.files.items()):
            sys.stdout.write(f"{sha}  {name}\n")
        return
    chosen = parse_platform(platform)
    if chosen is not None:
        if chosen not in manifest.platforms:
            raise BadInput(f"{chosen} is not one of its platforms ({', '.join(p.value for p in manifest.platforms)})",
                           field="--platform")
        manifest = manifest.for_platform(chosen)
    sys.stdout.write(resolved_yaml(manifest))


@commands.command()
def derive(
    path: Path = typer.Argument(..., help="The parent artifact directory (or its request.yaml)."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override one field of the parent's manifest (source form), e.g. model.precision=int8, "
                                        "framework.use=tvm-0.27, model.use=efficientnet-lite1; repeatable."),
    name: str = typer.Option(..., "--name", help="The new artifact's name: artifacts/NAME/ beside the parent."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Pin this dataset directory's files in the new lock."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
) -> None:
    """Write a derived artifact (parent: plus overrides), validate it and lock it, reusing the parent's lock entries."""
    from packager.cache import Cache
    from packager.cli.inputs import lock_table
    from packager.inputs.derive import derive as make

    result = make(path, sets, name, dataset=dataset, cache=Cache.open(cache))
    console.print(lock_table(result))
    console.print(f"[green]ok[/green] {result.path.parent}: `request-pack show {result.path.parent}` prints it resolved",
                  highlight=False, soft_wrap=True)
