"""``archive`` and ``reproduce``: thin commands over ``packager.reproduce``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from packager.cli.common import (
    ARTIFACT_HELP,
    CACHE_HELP,
    TRUST_DIR_HELP,
    TRUST_HELP,
    console,
)

commands = typer.Typer()


@commands.command("archive")
def archive_cmd(
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    out: Path = typer.Option(..., "--out", help="The archive to write (a plain tar)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
) -> None:
    """Write one deterministic tar of every input the lock names, for all platforms, with an index of sha256s.

    .debs, wheels, sdists and the build inputs of cross-built wheels, the model and the inputs of
    its recipe, the Dockerfile templates, manifest and lock, and request-pack's own source the
    image's harness layer is made from. The same lock and checkout give the same bytes.
    `request-pack fetch ARTIFACT --from FILE` fills a cache from it offline.
    """
    from packager.cache import Cache
    from packager.reproduce import plan_archive, write_archive

    written = write_archive(plan_archive(path, Cache.open(cache)), out)
    console.print(f"{escape(str(written.path))}: {written.size:,} bytes ({written.size / 1e6:.1f} MB), "
                  f"{written.entries} files, sha256:{written.sha256}", soft_wrap=True, highlight=False)


@commands.command()
def reproduce(
    bundle: Path = typer.Argument(..., help="A signed result bundle (.tar.gz or directory)."),
    from_archive: Path = typer.Option(..., "--from", help="The artifact's archive (`request-pack archive`)."),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help=TRUST_DIR_HELP),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Work here (fresh cache, artifact, build) and keep it; default a temporary directory."),
    sign: Optional[Path] = typer.Option(None, "--sign", help="Sign a reproduce record with this Ed25519 key (passphrase from $REQUEST_PACK_PASSPHRASE); written whether or not the digests match."),
    with_nix: bool = typer.Option(False, "--nix", help="Also build the image with the Nix derivation from the same archive (needs nix-build; amd64 .debs in the lock) and require the same index digest."),
    record: Optional[Path] = typer.Option(None, "--record", help="Where the signed record goes (default BUNDLE_NAME.reproduced.dsse.json here); `board add-reproduction` publishes it."),
) -> None:
    """Rebuild the image a signed bundle names from the archive alone, offline, and compare the index digest.

    1. verify the bundle against the trusted keys; 2. its build record names the lock and the
    platforms; 3. the archive must hold that lock; 4. a fresh cache is filled from the archive
    only; 5. the image is built; 6. its index digest must be the bundle's.
    """
    from packager.errors import CheckFailed
    from packager.reproduce import reproduce_bundle

    with tempfile.TemporaryDirectory(prefix="request-pack-reproduce-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        result = reproduce_bundle(bundle, from_archive, trust, trust_dir, work, with_nix=with_nix)
    if sign is not None:
        written = _sign_record(result, sign, record or Path(f"{bundle.name.split('.')[0]}.reproduced.dsse.json"))
        console.print(f"signed reproduce record: {escape(str(written))}", soft_wrap=True, highlight=False)
    line = (f"bundle {result.expected}\nrebuilt {result.actual} from {escape(str(from_archive))} offline "
            f"({', '.join(result.platforms)}; harness from the {result.harness}; {result.seconds:.0f} s)")
    if result.nix_digest is not None:
        line += f"\nnix     {result.nix_digest} (GNU tar wrote the file layers, Nix the configs, manifests and index)"
    if result.nix_digest is not None and result.nix_digest != result.actual:
        console.print(line, soft_wrap=True, highlight=False)
        raise CheckFailed(f"the Nix derivation built {result.nix_digest}, request-pack build {result.actual} from the same archive")
    if not result.matches:
        raise CheckFailed(f"not reproduced: the bundle names index {result.expected}, the archive rebuilds {result.actual}"
                          f" (layers that differ: {', '.join(result.differing) or 'none: config or manifest'})")
    console.print(f"{line}\n[green]reproduced[/green]: the same index digest", soft_wrap=True, highlight=False)


def _sign_record(result, key: Path, out: Path) -> Path:  # type: ignore[no-untyped-def]
    from packager.bundle import reproduction
    from packager.bundle.keys import load_private_key, read_passphrase
    from packager.image.writer.oci import write_file
    from packager.reproduce import reproduction_statement

    envelope = reproduction.sign(reproduction_statement(result), load_private_key(key, read_passphrase()))
    write_file(out, envelope.to_json().encode())
    return out
