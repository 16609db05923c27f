"""``publish``, ``board pareto|serve`` and ``export --mlperf``: the scoreboard and the MLPerf submission tree."""

from __future__ import annotations

import json
import sys
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
)

commands = typer.Typer()
board_app = typer.Typer(help="Query and serve a scoreboard.", no_args_is_help=True)


@commands.command("export")
def export_cmd(
    sources: list[Path] = typer.Argument(..., help="Signed bundles (.tar.gz or directories) or harness run directories."),
    out: Path = typer.Option(..., "--out", help="New (or empty) directory for the submission tree."),
    mlperf: bool = typer.Option(False, "--mlperf", help="Write an MLPerf-Inference-style submission tree (open division)."),
    trust: list[Path] = typer.Option([], "--trust", help="Trusted Ed25519 public key to verify bundles with; repeatable."),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help=TRUST_DIR_HELP),
    no_verify: bool = typer.Option(False, "--no-verify", help="Export bundles without verifying their signature first."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Ground truth (labels TSV or val.txt) when a source has no labels.tsv."),
    submitter: str = typer.Option("request-pack", "--submitter", help="Submitter (organisation) name in the tree."),
    status: str = typer.Option("rdi", "--status", help="System status: available, preview or rdi."),
) -> None:
    """Turn result bundles or run directories into an MLPerf-Inference-style submission tree."""
    from packager.errors import BadInput
    from packager.scoreboard.mlperf import ExportOptions, export_mlperf

    if not mlperf:
        raise BadInput("the only export format is --mlperf", field="--mlperf")
    opts = ExportOptions(submitter=submitter, trust=tuple(trust), trust_dir=trust_dir, verify=not no_verify,
                         labels=labels, status=status)
    report = export_mlperf(sources, out, opts)
    for e in report.entries:
        perf = "LoadGen logs" if e.performance_logs else "[yellow]no performance logs[/yellow]"
        console.print(f"{escape(e.system)}/{escape(e.model)}/{e.scenario}: top-1 {e.accuracy.top1:.4f} "
                      f"({e.accuracy.correct_top1}/{e.accuracy.samples}), {perf}", soft_wrap=True)
    for e in report.without_performance_logs:
        console.print(f"[yellow]note[/yellow] {escape(e.model)}/{e.scenario}: {escape(e.reason or '')}", soft_wrap=True)
    for e in report.nonconformant:
        console.print(f"[yellow]not conformant[/yellow] {escape(e.model)}/{e.scenario}: "
                      f"{escape('; '.join(e.nonconformities))}", soft_wrap=True)
    for why in report.skipped:
        console.print(f"[yellow]not exported[/yellow] {escape(why)}", soft_wrap=True)
    from packager.scoreboard.mlperf import CONFORMANCE, ROUND

    console.print(f"MLPerf Inference {ROUND}: {len(report.entries) - len(report.nonconformant)} of {len(report.entries)} "
                  f"scenario result(s) meet every rule checked; details in {escape(str(report.root / CONFORMANCE))}",
                  soft_wrap=True)
    console.print(f"[green]wrote[/green] {len(report.files)} files: {escape(str(report.root / report.division / report.submitter))}")


@commands.command()
def publish(
    bundles: list[Path] = typer.Argument(..., help="Signed bundles (directories or .tar.gz), or directories of bundles."),
    board: str = typer.Option(BOARD_URL, "--board", help=BOARD_HELP),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help=TRUST_DIR_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help=LABELS_HELP),
) -> None:
    """Verify each bundle fully, then add it to the board (idempotent on the bundle digest)."""
    from packager.bundle.keys import TrustStore
    from packager.scoreboard.publish import bundles_in, publish_iter

    store = TrustStore.load(trust, trust_dir)
    new = present = 0
    for p in publish_iter(bundles_in(bundles), board, store, labels=labels):
        new, present = new + p.inserted, present + (not p.inserted)
        state = "[green]published[/green]" if p.inserted else "[yellow]already on the board[/yellow]"
        console.print(f"{state} {escape(str(p.bundle))} {p.bundle_digest[:19]}… ({p.row.artifact}, {p.row.platform}, top-1 {p.row.top1:.4f})")
    console.print(f"{new} new, {present} already present")


@board_app.command("pareto")
def board_pareto(
    board: str = typer.Option(BOARD_URL, "--board", help=BOARD_HELP),
    objectives: str = typer.Option("accuracy:max,latency:min,price:min,power:min", "--objectives", help="name:max|min, comma-separated."),
    missing: str = typer.Option("worst", "--missing", help="A missing value (e.g. no power probe): 'worst' or 'exclude'."),
    measurement: str = typer.Option("", "--class", help="Only this measurement class, mode/execution/driver (e.g. quick/native/loadgen); default: one frontier per class."),
    platform: str = typer.Option("", "--platform", help="Only results of this platform."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Print the Pareto frontier of the board's results: one per measurement class, never across classes."""
    from rich.table import Table

    from packager.errors import BadInput
    from packager.scoreboard.pareto import Missing, parse_objectives
    from packager.scoreboard.store import (
        COLUMN_UNITS,
        OBJECTIVE_COLUMNS,
        OBJECTIVE_UNITS,
        Board,
        Filters,
        frontiers_by_class,
        objective_title,
    )

    try:
        policy = Missing(missing)
    except ValueError:
        raise BadInput(f"--missing {missing!r}: expected 'worst' or 'exclude'") from None
    objs = parse_objectives(objectives, known=OBJECTIVE_COLUMNS)
    with Board(board) as b:
        rows = b.rows(Filters(measurement=measurement, platform=platform))
    by_digest = {r.bundle_digest: r for r in rows}
    fronts = frontiers_by_class(rows, objs, missing=policy)
    if as_json:
        def record(digest: str) -> dict:
            r = by_digest[digest]
            return r.to_json() | {"objectives": {o.name: getattr(r, OBJECTIVE_COLUMNS[o.name]) for o in objs}}

        out = {
            "objectives": [str(o) for o in objs],
            "units": {o.name: {"label": OBJECTIVE_UNITS[o.name].label, "scale": OBJECTIVE_UNITS[o.name].scale,
                               "stored": COLUMN_UNITS[OBJECTIVE_COLUMNS[o.name]].label} for o in objs},
            "missing": policy.value,
            "count": len(rows),
            "classes": {k: {"count": sum(r.measurement == k for r in rows), "frontier": [record(d) for d in f.front],
                            "excluded": list(f.excluded)} for k, f in fronts.items()},
            # Every frontier member, class by class (each compared only within its class).
            "frontier": [record(d) for f in fronts.values() for d in f.front],
            "excluded": [d for f in fronts.values() for d in f.excluded],
        }
        sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
        return
    if not fronts:
        console.print(f"no results on the board{' for class ' + measurement if measurement else ''}")
    for key, front in fronts.items():
        members = [by_digest[d] for d in front.front]
        total = sum(r.measurement == key for r in rows)
        table = Table(title=f"class {key}: Pareto frontier, {len(members)} of {total} results "
                            f"({', '.join(map(str, objs))}; missing={policy.value})")
        for col in ["artifact", "platform", "samples", *[objective_title(o.name) for o in objs], "bundle"]:
            table.add_column(col)
        for r in members:
            vals = [OBJECTIVE_UNITS[o.name].show(getattr(r, OBJECTIVE_COLUMNS[o.name])) for o in objs]
            table.add_row(r.artifact, r.platform, str(r.samples), *vals, r.bundle_digest[:19])
        console.print(table)
        if front.excluded:
            console.print(f"{len(front.excluded)} result(s) of class {key} left out for a missing objective")
    console.print("Accuracy is on each result's own data set (see `samples`): the shared 200-image sample is not "
                  "the ILSVRC2012 validation set. Results of different classes are never compared.", soft_wrap=True)


@board_app.command("add-reproduction")
def add_reproduction_cmd(
    records: list[Path] = typer.Argument(..., help="Signed reproduce records (`request-pack reproduce --sign KEY`)."),
    board: str = typer.Option(BOARD_URL, "--board", help=BOARD_HELP),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help=TRUST_DIR_HELP),
) -> None:
    """Verify signed reproduce records and store them: the evidence behind the "Image Rebuilt" badge."""
    from packager.bundle import reproduction
    from packager.bundle.keys import TrustStore
    from packager.scoreboard.rebuilds import add_reproduction
    from packager.scoreboard.store import Board

    store = TrustStore.load(trust, trust_dir)
    verified = [reproduction.verify_file(r, store) for r in records]  # a refused record does not even open the board
    with Board(board) as b:
        for record, rec in zip(records, verified):
            added = add_reproduction(rec, b, store)
            r = added.row
            verdict = "the same index digest" if r.rebuilt_digest == r.index_digest else f"[red]differs[/red] ({r.rebuilt_digest})"
            where = "" if added.on_board else "; its bundle is not on this board (yet): no badge follows"
            console.print(f"{'stored' if added.inserted else 'already on the board'}: {escape(str(record))}: bundle "
                          f"{r.bundle_digest[:19]}… index {r.index_digest}, rebuilt: {verdict}{where}",
                          soft_wrap=True, highlight=False)


@board_app.command("serve")
def board_serve(
    board: str = typer.Option(BOARD_URL, "--board", help=BOARD_HELP),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """Serve the results table, Pareto plots, result pages, JSON API and CSV export."""
    from packager.scoreboard.web import serve

    serve(board, host=host, port=port)
