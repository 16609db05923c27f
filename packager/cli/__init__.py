"""The ``request-pack`` command line: parse, call one library function, map errors to exit codes.

One module per command group (``inputs``, ``image``, ``run``, ``bundle``, ``board``,
``farm``, ``doctor``), each a thin shell over the library. Only this package prints
for the user; only ``run`` below chooses an exit code: library modules raise
``packager.errors`` exceptions and log through ``logging``.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Optional

import typer
from rich.markup import escape

from packager import __version__
from packager.cli import archive, board, bundle, compose, doctor, evaluate, explore, farm, image, inputs, tune
from packager.cli.common import console, err_console
from packager.errors import RequestPackError

app = typer.Typer(
    name="request-pack",
    help="Hermetic packager, runner and verifier for reproducible ML benchmark artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("packager")

# The order `request-pack --help` lists them in; the groups (board, farm) come after.
ORDER = ("validate", "show", "derive", "schema", "doctor", "lock", "fetch", "archive", "convert", "keygen", "sign", "verify", "export",
         "publish", "build", "nix", "run", "evaluate", "explore", "tune", "reproduce")
_commands = {c.name or c.callback.__name__.replace("_", "-"): c  # type: ignore[union-attr]
             for group in (inputs, compose, archive, doctor, bundle, board, image, evaluate, explore, tune) for c in group.commands.registered_commands}
assert set(_commands) == set(ORDER), sorted(set(_commands) ^ set(ORDER))
app.registered_commands += [_commands[name] for name in ORDER]
app.add_typer(board.board_app, name="board")
app.add_typer(farm.farm_app, name="farm")


def show_version(value: bool) -> None:
    if value:
        console.print(f"request-pack {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log commands and progress."),
    version: Optional[bool] = typer.Option(None, "--version", callback=show_version, is_eager=True),
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
    )


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, ``timeout``, Slurm ending a job) into SystemExit(143).

    Python's default for SIGTERM ends the process without unwinding, so the runner's
    ``finally`` never removed its container, which went on computing and writing.
    """
    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)


def run() -> None:
    """Console-script entry point: the one place that turns errors into exit codes.

    Click's standalone mode already maps usage errors to exit 2; our own
    errors pass through it and are mapped here.
    """
    exit_on_sigterm()
    try:
        app()
    except RequestPackError as e:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.return_code)
