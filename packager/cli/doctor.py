"""``doctor``: what this machine can do, and the command that fixes each gap."""

from __future__ import annotations

import json
import sys

import typer

from packager.cli.common import console

commands = typer.Typer()


@commands.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print a stable JSON document instead of a table."),
    require: str = typer.Option(
        "", "--require", metavar="CAP,...",
        help="Exit 3 unless these capabilities are present (docker, podman, buildah, emulation, "
        "mmdebstrap, skopeo, umoci, nix, gpu, fpga, host).",
    ),
) -> None:
    """Report container engines, QEMU emulation, nix, GPUs, FPGAs and host resources."""
    from packager import doctor as doc

    required = doc.parse_requirements(require)
    report = doc.diagnose()
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    else:
        console.print(doc.render_table(report))
    doc.require(report, required)
