"""``build`` and ``nix``: the artifact's OCI image, by the engine path and by Nix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from packager.cli.common import ARTIFACT_HELP, CACHE_HELP, console, parse_platforms

commands = typer.Typer()


@commands.command("build")
def build_cmd(
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    platform: str = typer.Option("", "--platform", metavar="P,...", help="Build only these platforms (default: the manifest's)."),
    engine: str = typer.Option("docker", "--engine", help="Engine to load the images into: docker, podman or buildah."),
    check: bool = typer.Option(False, "--check", help="Build twice from clean layer state and compare the index digests."),
    fresh_base: bool = typer.Option(False, "--fresh-base", help="With --check: also remake the base root filesystems (minutes under QEMU)."),
    push: Optional[str] = typer.Option(None, "--push", metavar="HOST:PORT", help="Push the image index to this registry."),
    no_load: bool = typer.Option(False, "--no-load", help="Write the OCI layout only; do not load into an engine."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Build root (default: build/ beside artifacts/)."),
    publish_digest: bool = typer.Option(False, "--publish-digest", help="Write the index digest into ARTIFACT/image.json (commit it beside the lock)."),
) -> None:
    """Build the multi-arch OCI image of a locked artifact, offline, from the cache.

    Says whether the index digest is the one the artifact publishes in image.json beside its lock.
    """
    from packager.image import build as builder

    platforms = parse_platforms(platform)
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
    if publish_digest:
        console.print(f"published {builder.write_published(path, result)}", soft_wrap=True)
    cmp = builder.compare_published(path, result)
    colour = {"match": "green", "differs": "bold red"}.get(cmp.status, "yellow")
    console.print(f"[{colour}]{cmp.status}[/{colour}]: {cmp.detail}", soft_wrap=True)
    if not no_load:
        for plat, ref in builder.load_into(result, engine).items():
            console.print(f"loaded {plat} into {engine} as {ref}", soft_wrap=True)
    if push:
        console.print(f"pushed {builder.push_to(result, push)}", soft_wrap=True)


@commands.command("nix")
def nix_cmd(
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    platform: str = typer.Option("", "--platform", metavar="P,...", help="Platforms of the image (default: the manifest's)."),
    build: bool = typer.Option(False, "--build", help="Also build the self-contained derivation (offline, sandboxed)."),
    check: bool = typer.Option(False, "--check", help="Build, then rebuild with nix-build --check: the bytes must match."),
    flake: Optional[Path] = typer.Option(None, "--flake", help="Build <FLAKE>#<name> with `nix build` instead of nix-build nix/<name>."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="OCI layout to compare with (default build/<name>/oci if present)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for default.nix and dockertools.nix (default nix/<name>)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
) -> None:
    """Write the pinned Nix expressions of an artifact (nix/<name>/) and optionally build and check them."""
    from packager.errors import CheckFailed
    from packager.image import nix

    platforms = parse_platforms(platform)
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
