"""``keygen``, ``sign``, ``verify``: Ed25519 keys and signed result bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from packager.bundle.keys import PASSPHRASE_ENV, read_passphrase
from packager.cli.common import TRUST_DIR_HELP, TRUST_HELP, console

commands = typer.Typer()



@commands.command()
def keygen(
    out: Path = typer.Option(..., "--out", help="Directory for NAME.key (mode 0600) and NAME.pub."),
    name: str = typer.Option("signing", "--name", help="File name stem of the key pair."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help=f"Encrypt the private key with this file's first line (or set ${PASSPHRASE_ENV})."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key pair."),
) -> None:
    """Generate an Ed25519 signing key pair; print its key id (sha256 of the raw public key)."""
    from packager.bundle.keys import generate_keypair

    pair = generate_keypair(out, name, read_passphrase(passphrase_file), overwrite=force)
    console.print(f"[green]key id[/green] {pair.keyid}")
    console.print(f"private {escape(str(pair.private_path))} (0600)\npublic  {escape(str(pair.public_path))}")


@commands.command()
def sign(
    result_dir: Path = typer.Argument(..., help="Result directory (metrics.json, predictions.jsonl, ...)."),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM)."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help=f"Passphrase file (or set ${PASSPHRASE_ENV})."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="Also pack the signed bundle into this deterministic .tar.gz."),
) -> None:
    """Write envelope.dsse.json: a DSSE-signed in-toto statement over every file and the image."""
    from packager.bundle.sign import sign_result_dir

    signed = sign_result_dir(result_dir, key, passphrase=read_passphrase(passphrase_file), archive_path=archive)
    console.print(
        f"[green]signed[/green] {signed.subjects} subjects of {escape(str(result_dir))} with key {signed.keyid[:16]} "
        f"(image {signed.index_digest[:19]}…)"
    )
    if signed.archive:
        console.print(f"packed {escape(str(signed.archive))}")


def show_report(report: object, as_json: bool) -> None:
    """The numbered checks of a verification, as a table or as JSON on stdout."""
    from rich.table import Table

    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")  # type: ignore[attr-defined]
        return
    table = Table(title=f"verify {escape(str(report.bundle))}", show_lines=False)  # type: ignore[attr-defined]
    for col in ("#", "check", "result", "detail"):
        table.add_column(col)
    style = {"pass": "[green]pass[/green]", "fail": "[bold red]FAIL[/bold red]", "skip": "[yellow]skip[/yellow]"}
    for c in report.checks:  # type: ignore[attr-defined]
        table.add_row(str(c.number), c.name, style[c.status], escape(c.detail))
    console.print(table)


@commands.command()
def verify(
    bundle: Path = typer.Argument(..., help="Signed bundle: a directory or a .tar.gz."),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help=TRUST_DIR_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Ground truth: labels TSV or ILSVRC2012 val.txt (default: the bundle's labels.tsv)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Ground truth from a local dataset directory, laid out as the bundle's manifest says."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", help="Artifact directory: also compare its lock and build/<name>/build-record.json."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="With --artifact: the build directory its record is in, when not the default build/."),
    role: Optional[str] = typer.Option(None, "--role", help="Require the signer to be trusted as 'author' or 'evaluator'."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout instead of a table."),
) -> None:
    """Check a bundle's signature, files, image digest, metrics and schemas; exit 10-16 per failure class."""
    from packager.bundle.keys import TrustStore
    from packager.bundle.verify import verify_bundle
    from packager.errors import BadInput, BundleCheckFailed

    if role not in (None, "author", "evaluator"):
        raise BadInput(f"--role {role!r}: expected 'author' or 'evaluator'")
    store = TrustStore.load(trust, trust_dir)
    try:
        report = verify_bundle(bundle, store, labels=labels, dataset=dataset, artifact=artifact, require_role=role,
                               build_root=build_root)  # type: ignore[arg-type]
    except BundleCheckFailed as e:
        if e.report is not None:
            show_report(e.report, as_json)
        raise
    show_report(report, as_json)
    if not as_json:
        console.print(f"[green]verified[/green] in {report.seconds:.2f} s")
