"""The ``request-pack`` command line: parse, call one library function, map errors to exit codes.

Only this module prints for the user or chooses an exit code; library modules
raise ``packager.errors`` exceptions and log through ``logging``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import RequestPackError

app = typer.Typer(
    name="request-pack",
    help="Hermetic packager, runner and verifier for reproducible ML benchmark artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("packager")


def _version(value: bool) -> None:
    if value:
        console.print(f"request-pack {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log commands and progress."),
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True),
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
    )


@app.command()
def validate(path: Path = typer.Argument(..., help="Artifact directory or its request.yaml.")) -> None:
    """Check a manifest against the schema."""
    from .manifest import load_manifest

    manifest = load_manifest(path)
    console.print(f"[green]ok[/green] {manifest.name} {manifest.version}: {', '.join(p.value for p in manifest.platforms)}")


@app.command()
def schema() -> None:
    """Print the manifest's JSON Schema."""
    from .manifest import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")


def run() -> None:
    """Console-script entry point: the one place that turns errors into exit codes.

    Click's standalone mode already maps usage errors to exit 2; our own
    errors pass through it and are mapped here.
    """
    try:
        app()
    except RequestPackError as e:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.return_code)


if __name__ == "__main__":
    run()
