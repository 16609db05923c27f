"""The ``request-pack`` command line: parse, call one library function, map errors to exit codes.

Only this module prints for the user or chooses an exit code; library modules
raise ``packager.errors`` exceptions and log through ``logging``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from packager import __version__
from packager.errors import RequestPackError
from packager.platforms import Platform

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


def _platforms_option(text: str) -> tuple[Platform, ...]:
    """``--platform linux/amd64,linux/arm64``; empty means the manifest's platforms."""
    return tuple(p for p in (_platform_option(item) for item in text.split(",")) if p is not None)


def _platform_option(text: str | None) -> Optional[Platform]:
    from packager.errors import BadInput

    if not text or not text.strip():
        return None
    try:
        return Platform.parse(text)
    except ValueError:
        raise BadInput(f"unknown platform {text.strip()!r}", field="--platform") from None


@app.command()
def validate(path: Path = typer.Argument(..., help="Artifact directory or its request.yaml.")) -> None:
    """Check a manifest against the schema."""
    from packager.manifest import load_manifest

    manifest = load_manifest(path)
    console.print(f"[green]ok[/green] {manifest.name} {manifest.version}: {', '.join(p.value for p in manifest.platforms)}")


@app.command()
def schema() -> None:
    """Print the manifest's JSON Schema."""
    from packager.manifest import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")


@app.command()
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


# --- lock and cache (packager.lock) ------------------------------------------------


def _lock_table(result) -> "object":
    from rich.table import Table

    title = f"{result.path} ({'verified, frozen' if result.frozen else 'written' if result.changed else 'unchanged'})"
    table = Table(title=title, title_justify="left")
    for col in ("platform", "debs", "wheels", "bytes"):
        table.add_column(col, justify="left" if col == "platform" else "right")
    for row in result.summary:
        table.add_row(row.platform, str(row.debs), str(row.wheels), f"{row.bytes:,}")
    return table


@app.command("lock")
def lock_cmd(
    path: Path = typer.Argument(..., help="Artifact directory or its request.yaml."),
    frozen: bool = typer.Option(False, "--frozen", help="Never resolve or download: check the lock is current and every locked file is cached."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Pin the sha256 of the dataset's labels file and of each image."),
    platform: str = typer.Option("", "--platform", metavar="P,...", help="Resolve only these platforms (others keep their entries)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache root (default $REQUEST_PACK_CACHE or ~/.cache/request-pack)."),
) -> None:
    """Pin every input (Debian packages, wheels, model, dataset, templates) by sha256 in request.lock.

    Resolves against the live Debian mirror and PyPI (the mirror moves: the lock,
    not the mirror, is the pin) and stores every file in the cache, verified.
    --frozen never resolves and never touches the network.
    """
    from packager.cache import Cache
    from packager.inputs.lock import lock

    platforms = list(_platforms_option(platform))
    result = lock(path, frozen=frozen, dataset=dataset, platforms=platforms or None, cache=Cache.open(cache))
    console.print(_lock_table(result))


@app.command()
def fetch(
    path: Path = typer.Argument(..., help="Artifact directory or its request.yaml."),
    from_file: Optional[Path] = typer.Option(None, "--from", help="Model file (or its source) to verify against the lock and store, offline."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache root (default $REQUEST_PACK_CACHE or ~/.cache/request-pack)."),
) -> None:
    """Fill the cache with every file an existing lock pins, verified."""
    from packager.cache import Cache
    from packager.inputs.lock import fetch as fill

    result = fill(path, from_file, cache=Cache.open(cache))
    console.print(_lock_table(result))


@app.command()
def convert(
    path: Path = typer.Argument(..., help="Artifact directory or its request.yaml."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache root (default $REQUEST_PACK_CACHE or ~/.cache/request-pack)."),
    allow_other_versions: bool = typer.Option(
        False, "--allow-other-versions", help="Run even if installed tools differ from the recipe's pins (the hash check still applies)."
    ),
) -> None:
    """Regenerate the model file from its pinned source with the manifest's recipe and check its sha256."""
    from packager.cache import Cache
    from packager.inputs.convert import convert as run_recipe

    result = run_recipe(path, cache=Cache.open(cache) if cache else None, allow_other_versions=allow_other_versions)
    console.print(f"[green]ok[/green] {result.recipe}: sha256 {result.sha256} reproduced\n{result.path}", highlight=False, soft_wrap=True)


# --- signed result bundles (packager.bundle) -------------------------------------

_PASSPHRASE_ENV = "REQUEST_PACK_PASSPHRASE"


def _passphrase(file: Optional[Path]) -> Optional[bytes]:
    """A passphrase from a file or $REQUEST_PACK_PASSPHRASE: never from argv, where ps would show it."""
    import os

    if file is not None:
        return file.read_bytes().rstrip(b"\r\n") or None
    value = os.environ.get(_PASSPHRASE_ENV)
    return value.encode() if value else None


@app.command()
def keygen(
    out: Path = typer.Option(..., "--out", help="Directory for NAME.key (mode 0600) and NAME.pub."),
    name: str = typer.Option("signing", "--name", help="File name stem of the key pair."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help=f"Encrypt the private key with this file's first line (or set ${_PASSPHRASE_ENV})."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key pair."),
) -> None:
    """Generate an Ed25519 signing key pair; print its key id (sha256 of the raw public key)."""
    from packager.bundle.keys import generate_keypair

    pair = generate_keypair(out, name, _passphrase(passphrase_file), overwrite=force)
    console.print(f"[green]key id[/green] {pair.keyid}")
    console.print(f"private {escape(str(pair.private_path))} (0600)\npublic  {escape(str(pair.public_path))}")


@app.command()
def sign(
    result_dir: Path = typer.Argument(..., help="Result directory (metrics.json, predictions.jsonl, ...)."),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM)."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help=f"Passphrase file (or set ${_PASSPHRASE_ENV})."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="Also pack the signed bundle into this deterministic .tar.gz."),
) -> None:
    """Write envelope.dsse.json: a DSSE-signed in-toto statement over every file and the image."""
    from packager.bundle.sign import sign_result_dir

    signed = sign_result_dir(result_dir, key, passphrase=_passphrase(passphrase_file), archive_path=archive)
    console.print(
        f"[green]signed[/green] {signed.subjects} subjects of {escape(str(result_dir))} with key {signed.keyid[:16]} "
        f"(image {signed.index_digest[:19]}…)"
    )
    if signed.archive:
        console.print(f"packed {escape(str(signed.archive))}")


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="Signed bundle: a directory or a .tar.gz."),
    trust: list[Path] = typer.Option([], "--trust", help="Trusted Ed25519 public key (PEM); repeatable."),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help="Trust directory: *.pub, authors/*.pub, evaluators/*.pub."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Ground truth: labels TSV or ILSVRC2012 val.txt (default: the bundle's labels.tsv)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Ground truth from a local dataset directory, laid out as the bundle's manifest says."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", help="Artifact directory: also compare its lock and build/<name>/build-record.json."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="With --artifact: the build directory its record is in, when not the default build/."),
    role: Optional[str] = typer.Option(None, "--role", help="Require the signer to be trusted as 'author' or 'evaluator'."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout instead of a table."),
) -> None:
    """Check a bundle's signature, files, image digest, metrics and schemas; exit 10-16 per failure class."""
    from rich.table import Table

    from packager.bundle.keys import TrustStore
    from packager.bundle.verify import verify_bundle
    from packager.errors import BadInput, BundleCheckFailed

    if role not in (None, "author", "evaluator"):
        raise BadInput(f"--role {role!r}: expected 'author' or 'evaluator'")
    store = TrustStore.load(trust, trust_dir)

    def show(report) -> None:  # type: ignore[no-untyped-def]
        if as_json:
            sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
            return
        table = Table(title=f"verify {escape(str(report.bundle))}", show_lines=False)
        for col in ("#", "check", "result", "detail"):
            table.add_column(col)
        style = {"pass": "[green]pass[/green]", "fail": "[bold red]FAIL[/bold red]", "skip": "[yellow]skip[/yellow]"}
        for c in report.checks:
            table.add_row(str(c.number), c.name, style[c.status], escape(c.detail))
        console.print(table)

    try:
        report = verify_bundle(bundle, store, labels=labels, dataset=dataset, artifact=artifact, require_role=role,
                               build_root=build_root)  # type: ignore[arg-type]
    except BundleCheckFailed as e:
        if e.report is not None:
            show(e.report)
        raise
    show(report)
    if not as_json:
        console.print(f"[green]verified[/green] in {report.seconds:.2f} s")



# --- export (packager/mlperf.py) --------------------------------------------------------


@app.command("export")
def export_cmd(
    sources: list[Path] = typer.Argument(..., help="Signed bundles (.tar.gz or directories) or harness run directories."),
    out: Path = typer.Option(..., "--out", help="New (or empty) directory for the submission tree."),
    mlperf: bool = typer.Option(False, "--mlperf", help="Write an MLPerf-Inference-style submission tree (open division)."),
    trust: list[Path] = typer.Option([], "--trust", help="Trusted Ed25519 public key to verify bundles with; repeatable."),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help="Trust directory: *.pub, authors/*.pub, evaluators/*.pub."),
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
    console.print(f"[green]wrote[/green] {len(report.files)} files: {escape(str(report.root / report.division / report.submitter))}")


# --- scoreboard: publish and board ---------------------------------------------------

BOARD_HELP = "Board database URL: sqlite:///FILE (default sqlite:///scoreboard.db) or postgresql://user@host:port/db."


@app.command()
def publish(
    bundles: list[Path] = typer.Argument(..., help="Signed bundles (directories or .tar.gz), or directories of bundles."),
    board: str = typer.Option("sqlite:///scoreboard.db", "--board", help=BOARD_HELP),
    trust: list[Path] = typer.Option([], "--trust", help="Trusted Ed25519 public key (PEM); repeatable."),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help="Trust directory: *.pub, authors/*.pub, evaluators/*.pub."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Ground-truth labels TSV (default: each bundle's labels.tsv)."),
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


board_app = typer.Typer(help="Query and serve a scoreboard.", no_args_is_help=True)
app.add_typer(board_app, name="board")


@board_app.command("pareto")
def board_pareto(
    board: str = typer.Option("sqlite:///scoreboard.db", "--board", help=BOARD_HELP),
    objectives: str = typer.Option("accuracy:max,latency:min,price:min,power:min", "--objectives", help="name:max|min, comma-separated."),
    missing: str = typer.Option("worst", "--missing", help="A missing value (e.g. no power probe): 'worst' or 'exclude'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the Pareto frontier of the board's results."""
    from rich.table import Table

    from packager.errors import BadInput
    from packager.scoreboard.pareto import Missing
    from packager.scoreboard.store import Board
    from packager.scoreboard.web import board_view

    try:
        policy = Missing(missing)
    except ValueError:
        raise BadInput(f"--missing {missing!r}: expected 'worst' or 'exclude'") from None
    with Board(board) as b:
        view = board_view(b, objectives=objectives, missing=policy)
    front = set(view.frontier.front)
    rows = [r for r in view.rows if r.bundle_digest in front]
    if as_json:
        out = {
            "objectives": [str(o) for o in view.objectives],
            "missing": policy.value,
            "count": len(view.rows),
            "frontier": [view.record(r) for r in rows],
            "excluded": list(view.frontier.excluded),
        }
        sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
        return
    from packager.scoreboard.store import OBJECTIVE_COLUMNS

    table = Table(title=f"Pareto frontier: {len(rows)} of {len(view.rows)} results ({', '.join(map(str, view.objectives))}; missing={policy.value})")
    for col in ["artifact", "platform", *[o.name for o in view.objectives], "bundle"]:
        table.add_column(col)
    for r in rows:
        vals = [getattr(r, OBJECTIVE_COLUMNS[o.name]) for o in view.objectives]
        table.add_row(r.artifact, r.platform, *["—" if v is None else f"{v:.4g}" for v in vals], r.bundle_digest[:19])
    console.print(table)
    if view.frontier.excluded:
        console.print(f"{len(view.frontier.excluded)} result(s) left out for a missing objective")


@board_app.command("serve")
def board_serve(
    board: str = typer.Option("sqlite:///scoreboard.db", "--board", help=BOARD_HELP),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """Serve the results table, Pareto plots, result pages, JSON API and CSV export."""
    from packager.scoreboard.web import serve

    serve(board, host=host, port=port)

@app.command("build")
def build_cmd(
    path: Path = typer.Argument(..., help="Artifact directory or its request.yaml."),
    platform: str = typer.Option("", "--platform", metavar="P,...", help="Build only these platforms (default: the manifest's)."),
    engine: str = typer.Option("docker", "--engine", help="Engine to load the images into: docker, podman or buildah."),
    check: bool = typer.Option(False, "--check", help="Build twice from clean layer state and compare the index digests."),
    fresh_base: bool = typer.Option(False, "--fresh-base", help="With --check: also remake the base root filesystems (minutes under QEMU)."),
    push: Optional[str] = typer.Option(None, "--push", metavar="HOST:PORT", help="Push the image index to this registry."),
    no_load: bool = typer.Option(False, "--no-load", help="Write the OCI layout only; do not load into an engine."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache root (default $REQUEST_PACK_CACHE or ~/.cache/request-pack)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Build root (default: build/ beside artifacts/)."),
) -> None:
    """Build the multi-arch OCI image of a locked artifact, offline, from the cache."""
    from packager.image import build as builder

    platforms = _platforms_option(platform)
    opts = builder.BuildOptions(platforms=platforms, build_root=out, cache_root=cache, fresh_base=fresh_base)
    if not no_load:
        builder.engine_version(engine)  # fail before minutes of work if the engine is down
    if check:
        res = builder.check(path, opts)
        console.print(f"[green]reproducible[/green] index {res.index_digests[0]} (builds took {res.seconds[0]} s and {res.seconds[1]} s)", soft_wrap=True)
    # --fresh-base is for the comparison only: the build that is kept reuses the bases --check made.
    result = builder.build(path, dataclasses.replace(opts, fresh_base=False))
    for img in result.images:
        cached = sum(1 for i in img.layers if i.cached)
        console.print(f"{img.platform.value:14} {img.manifest.digest}  {sum(i.size for i in img.layers) / 1e6:7.1f} MB  "
                      f"({cached}/{len(img.layers)} layers cached)", soft_wrap=True)
    console.print(f"index {result.index.digest}  ->  {result.layout}  ({result.seconds:.1f} s)", soft_wrap=True)
    if not no_load:
        for plat, ref in builder.load_into(result, engine).items():
            console.print(f"loaded {plat} into {engine} as {ref}", soft_wrap=True)
    if push:
        console.print(f"pushed {builder.push_to(result, push)}", soft_wrap=True)


@app.command("nix")
def nix_cmd(
    path: Path = typer.Argument(..., help="Artifact directory or its request.yaml."),
    platform: str = typer.Option("", "--platform", metavar="P,...", help="Platforms of the image (default: the manifest's)."),
    build: bool = typer.Option(False, "--build", help="Also build the self-contained derivation (offline, sandboxed)."),
    check: bool = typer.Option(False, "--check", help="Build, then rebuild with nix-build --check: the bytes must match."),
    flake: Optional[Path] = typer.Option(None, "--flake", help="Build <FLAKE>#<name> with `nix build` instead of nix-build nix/<name>."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="OCI layout to compare with (default build/<name>/oci if present)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for default.nix and dockertools.nix (default nix/<name>)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache root (default $REQUEST_PACK_CACHE or ~/.cache/request-pack)."),
) -> None:
    """Write the pinned Nix expressions of an artifact (nix/<name>/) and optionally build and check them."""
    from packager.errors import CheckFailed
    from packager.image import nix

    platforms = _platforms_option(platform)
    opts = nix.NixOptions(platforms=platforms, out_dir=out, cache_root=cache, build=build, check=check,
                          flake=flake, compare_with=compare)
    report = nix.run(path, opts)
    console.print(f"wrote {report.expression.default_nix} and {report.expression.dockertools_nix} "
                  f"({len(report.expression.pins)} pinned inputs)")
    if report.build is not None:
        console.print(f"nix: index {report.build.index_digest}  ->  {report.build.out}"
                      + ("  [green](--check: rebuilt bit for bit)[/green]" if report.build.checked else ""))
    if report.comparison is not None:
        if not report.comparison.equal:
            raise CheckFailed(f"nix-built index {report.comparison.nix_index} differs from the engine's "
                              f"{report.comparison.engine_index}: {report.comparison.detail}")
        console.print(f"[green]same as the engine build[/green]: {report.comparison.detail}")


# --- run and evaluate (packager/runner.py, packager/evaluate.py) ------------------------


def _progress_bar():  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            return Text(f"{task.speed:.1f} img/s" if task.speed else "")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False)


def _progress_fn(bar, description: str):  # type: ignore[no-untyped-def]
    task = bar.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    return update


@app.command("run")
def run_cmd(
    artifact: Path = typer.Argument(..., help="Artifact directory or its request.yaml."),
    stage: str = typer.Option("functional", "--stage", help="functional or full."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset directory (mounted read-only)."),
    out: Path = typer.Option(..., "--out", help="Output directory (the only writable mount)."),
    platform: Optional[str] = typer.Option(None, "--platform", help="linux/amd64, linux/arm64 or linux/arm/v7 (non-native runs under QEMU)."),
    device: list[str] = typer.Option([], "--device", help="/dev/NODE[:/dev/NAME], vendor.com/class=name (CDI) or gpu; repeatable."),
    target: Optional[str] = typer.Option(None, "--target", help="local (default) or ssh://user@host[:port]."),
    engine: str = typer.Option("docker", "--engine", help="docker or podman."),
    resume: bool = typer.Option(False, "--resume", help="Continue a run whose predictions.jsonl is in --out."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Override the stage's sample count."),
    cdi_spec_dir: list[Path] = typer.Option([], "--cdi-spec-dir", help="CDI spec directories (default /etc/cdi, /var/run/cdi)."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="Where build/<name>/build-record.json is (default: build/ beside artifacts/)."),
) -> None:
    """Run one stage of an artifact's image, by digest, in the sandbox."""
    from packager.engine import get_engine
    from packager.manifest import load_manifest
    from packager.platforms import Platform
    from packager.run.devices import DEFAULT_CDI_DIRS
    from packager.run.runner import RunOptions, image_from_record, run_stage

    plat = _platform_option(platform) or Platform.native()
    manifest = load_manifest(artifact)
    artifact_dir = artifact.parent if artifact.is_file() else artifact
    ref = image_from_record(artifact_dir, manifest.name, plat, build_root)
    opts = RunOptions(stage=stage, dataset=dataset, out=out, platform=plat, devices=tuple(device), resume=resume,
                      samples=samples, cdi_dirs=tuple(cdi_spec_dir) or DEFAULT_CDI_DIRS)
    with _progress_bar() as bar:
        result = run_stage(manifest, ref, get_engine(engine, target), opts, progress=_progress_fn(bar, f"{stage} {plat}"))
    console.print(f"[green]ok[/green] {stage} stage of {manifest.name} on {plat} in {result.wall_s:.1f} s; "
                  f"outputs in {escape(str(out))}, log {escape(str(result.container_log))}")


@app.command("evaluate")
def evaluate_cmd(
    artifact: Path = typer.Argument(..., help="Artifact directory or its request.yaml."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset directory (default $REQUEST_PACK_SAMPLE or ../shared/data/imagenet-sample)."),
    key: Optional[Path] = typer.Option(None, "--key", help="Evaluator's Ed25519 private key (NAME.key beside NAME.pub); default ~/.config/request-pack/keys/evaluator.key, made once."),
    out: Path = typer.Option(Path("results"), "--out", help="Result directory: functional/, full/ and the signed bundle."),
    platform: Optional[str] = typer.Option(None, "--platform", help="Platform to evaluate (default: this machine's)."),
    device: list[str] = typer.Option([], "--device", help="As for run; repeatable."),
    target: Optional[str] = typer.Option(None, "--target", help="local (default) or ssh://user@host[:port]."),
    engine: str = typer.Option("docker", "--engine", help="docker or podman."),
    stage: str = typer.Option("all", "--stage", help="functional, full or all; the last stage run is signed and verified."),
    resume: bool = typer.Option(False, "--resume", help="Continue each stage's predictions.jsonl in --out (a requeued job)."),
    image: Optional[str] = typer.Option(None, "--image", metavar="HOST/REPO@sha256:DIGEST", help="Pull this index or manifest from a registry, by digest, instead of building."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="Where build/<name>/build-record.json is (default: build/ beside artifacts/)."),
) -> None:
    """Build-or-pull, digest check, functional stage, full stage, sign, verify, summary."""
    import os

    from rich.table import Table

    from packager.pipeline import evaluate

    if dataset is None:
        env = os.environ.get("REQUEST_PACK_SAMPLE")
        dataset = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
    plat = _platform_option(platform)
    with _progress_bar() as bar:
        ev = evaluate(artifact, dataset, out, key=key, platform=plat, engine=engine, target=target, devices=tuple(device),
                      progress=lambda stage: _progress_fn(bar, stage), stages=stage, resume=resume, image=image,
                      build_root=build_root)
    table = Table(title=f"{ev.artifact} on {ev.platform} (image {ev.image.manifest_digest or ev.image.config_digest})")
    for col in ("stage", "samples", "top-1", "top-5", "min top-1", "p50 ms", "img/s", "wall s"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for s in ev.stages:
        table.add_row(s.stage, str(s.samples), f"{s.top1:.4f}", f"{s.top5:.4f}", f"{s.min_top1:.2f}",
                      f"{s.p50_ms:.2f}" if s.p50_ms is not None else "-",
                      f"{s.images_per_s:.1f}" if s.images_per_s is not None else "-", f"{s.wall_s:.1f}")
    console.print(table)
    console.print(f"[green]signed[/green] with key {ev.keyid[:16]} and [green]verified[/green] in {ev.verify_seconds:.2f} s: "
                  f"{escape(str(ev.bundle))}")
    console.print("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in ev.timings.items()))


# --- farm: Slurm and Kubernetes ----------------------------------------------------------

farm_app = typer.Typer(help="Evaluate many artifacts on a board farm (Slurm) or a cluster (Kubernetes Jobs).",
                       no_args_is_help=True)
app.add_typer(farm_app, name="farm")


@farm_app.command("submit")
def farm_submit(
    artifacts: list[Path] = typer.Argument(..., help="Artifact directories (or their request.yaml)."),
    engine: str = typer.Option("slurm", "--engine", help="slurm or kubernetes."),
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
    import os

    from packager.errors import BadInput
    from packager.farm import jobs as farm_jobs
    from packager.farm.images import ensure_images

    if engine not in ("slurm", "kubernetes"):
        raise BadInput(f"engine {engine!r} is not slurm or kubernetes", field="--engine")
    if not registry:
        raise BadInput("a farm pulls images by digest from a registry: pass --registry HOST:PORT", field="--registry")
    if stage not in farm_jobs.STAGES:
        raise BadInput(f"stage {stage!r} is not one of {', '.join(farm_jobs.STAGES)}", field="--stage")
    plats = tuple(p for p in (_platform_option(t) for t in platform) if p is not None) or None
    if engine == "slurm" and not dry_run:
        from packager.farm.slurm import check_request

        check_request(artifacts, plats, partition=partition)  # before building: an impossible job fails now
    if dataset is None and engine == "slurm":
        env = os.environ.get("REQUEST_PACK_SAMPLE")
        dataset = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
    images = ensure_images(artifacts, registry, build_root=build_root, platforms=plats)
    # Kubernetes mounts its own dataset claim: without --dataset the key cannot cover it.
    jobs = farm_jobs.plan(artifacts, images, stage=stage, platforms=plats, dataset=dataset)  # type: ignore[arg-type]
    if engine == "kubernetes":
        from packager.farm import kubernetes

        paths = kubernetes.submit(jobs, out=results, dry_run=dry_run, namespace=namespace,
                                  fpga_resource=fpga_resource, accelerator_resource=accelerator_resource)
        for p in paths:
            console.print(f"{'wrote' if dry_run else 'applied'} {escape(str(p))}")
        return
    if dry_run:
        raise BadInput("--dry-run is for --engine kubernetes; Slurm's own check is sbatch --test-only", field="--dry-run")
    from packager.farm.slurm import submit

    assert dataset is not None
    for s in submit(jobs, results=results, dataset=dataset, build_root=build_root, signing_key=key, partition=partition):
        what = {"submitted": f"[green]submitted[/green] as job {s.job_id}", "done": "[blue]done[/blue] (verified result)",
                "queued": f"[yellow]queued[/yellow] already as job {s.job_id}"}[s.action]
        console.print(f"{what}: {s.job.name} ({s.job.artifact}, {s.job.platform}, {s.job.stage}) key {s.job.key[:12]}")


@farm_app.command("status")
def farm_status(
    results: Path = typer.Option(Path("farm-results"), "--results", help="Results location given to submit."),
) -> None:
    """One row per job: Slurm state, board, elapsed, and how far its results directory is."""
    from rich.table import Table

    from packager.farm.slurm import status

    table = Table(title=f"farm jobs in {results}")
    for col in ("artifact", "platform", "key", "id", "state", "board", "elapsed", "stage", "restarts", "verified"):
        table.add_column(col, overflow="fold")
    for r in status(results):
        table.add_row(r.artifact, r.platform, r.key[:8], r.job_id or "-", r.state, r.node or "-",
                      f"{r.elapsed_s:.0f} s" if r.elapsed_s is not None else "-", r.stage, str(r.restarts),
                      "yes" if r.verified else "no")
    console.print(table)


@farm_app.command("collect")
def farm_collect(
    results: Path = typer.Option(Path("farm-results"), "--results", help="Results location given to submit (kubernetes: the Jobs' outputs copied off the results claim, one directory per job name)."),
    board: str = typer.Option("sqlite:///scoreboard.db", "--board", help=BOARD_HELP),
    trust: list[Path] = typer.Option([], "--trust", help="Trusted Ed25519 public key (PEM); repeatable."),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help="Trust directory: *.pub, authors/*.pub, evaluators/*.pub."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Ground-truth labels TSV (default: each bundle's labels.tsv)."),
    engine: str = typer.Option("slurm", "--engine", help="slurm (bundles signed on the boards) or kubernetes (sealed here first)."),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="kubernetes: the directory of *.job.yaml farm submit wrote."),
    key: Optional[Path] = typer.Option(None, "--key", help="kubernetes: evaluator's signing key to seal with (NAME.key beside NAME.pub)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="kubernetes: the dataset the pods read (default $REQUEST_PACK_SAMPLE or ../shared/data/imagenet-sample)."),
    artifacts: list[Path] = typer.Option([], "--artifacts", help="kubernetes: artifact directories, or directories of them, to find each Job's request.yaml in (default: ./artifacts); repeatable."),
    build_root: Optional[Path] = typer.Option(None, "--build-root", help="kubernetes: where build/<name>/ is (default: build/ beside artifacts/)."),
) -> None:
    """Verify every bundle, publish the good ones, report the bad and the missing ones with the reason.

    With --engine kubernetes, each Job's outputs are first sealed (min_top1, image against the
    build record, bundled, signed with --key, verified), once: a sealed Job is not sealed again."""
    import os

    from packager.bundle.keys import TrustStore
    from packager.errors import BadInput, CheckFailed
    from packager.farm.collect import collect_iter, collect_kubernetes_iter, summary

    if engine not in ("slurm", "kubernetes"):
        raise BadInput(f"engine {engine!r} is not slurm or kubernetes", field="--engine")
    if engine == "slurm":
        for flag, given in (("--jobs", jobs), ("--key", key), ("--dataset", dataset), ("--artifacts", artifacts),
                            ("--build-root", build_root)):
            if given:
                raise BadInput("only for --engine kubernetes: Slurm boards seal their own bundles", field=flag)
        found = collect_iter(results, board, TrustStore.load(trust, trust_dir), labels=labels)
    else:
        if jobs is None:
            raise BadInput("--engine kubernetes needs --jobs: the directory of *.job.yaml farm submit wrote", field="--jobs")
        if dataset is None:
            env = os.environ.get("REQUEST_PACK_SAMPLE")
            dataset = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
        found = collect_kubernetes_iter(jobs, results, board, TrustStore.load(trust, trust_dir), artifacts=artifacts or [Path("artifacts")],
                                        dataset=dataset, key=key, build_root=build_root, labels=labels)
    rows = []
    for c in found:
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
        what = "bundle(s) failed verification" if engine == "slurm" else "job(s) or bundle(s) failed their checks"
        raise CheckFailed(f"{counts['bad']} {what} and were not published")


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


if __name__ == "__main__":
    run()
