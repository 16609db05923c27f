"""``archive`` and ``reproduce``: one archive of every input, and rebuilding a signed bundle's image from it offline.

The tar is written here and not in ``inputs.archive`` because the one
deterministic tar writer lives in ``image/writer`` (above ``inputs``); the
module below decides what goes in, this one only streams it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from packager.cli.common import ARTIFACT_HELP, CACHE_HELP, TRUST_DIR_HELP, TRUST_HELP, console

commands = typer.Typer()


@dataclass(frozen=True)
class Written:
    path: Path
    sha256: str
    size: int
    payload: int
    entries: int


class _Hashing(io.RawIOBase):
    def __init__(self, sink) -> None:  # type: ignore[no-untyped-def]
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
        self.sha.update(b)
        self.size += len(b)
        return self.sink.write(b)


def write_archive(plan, out: Path) -> Written:  # type: ignore[no-untyped-def]
    """Stream ``plan`` (``inputs.archive.Plan``) into ``out`` as a plain tar: sorted, mtime 0, owner 0, mode 0644/0755."""
    from packager.image.writer import oci

    top = plan.top
    files = [oci.Entry(f"{top}/index.json", "file", size=len(plan.index), open=lambda: io.BytesIO(plan.index))]
    files += [oci.Entry(f"{top}/{m.path}", "file", size=m.size, open=(lambda p=m.source: open(p, "rb")))
              for m in plan.members]
    entries = oci.normalise(oci.parent_dirs([e.path for e in files]) + files, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            sink = _Hashing(f)
            oci.write_tar(entries, sink)  # type: ignore[arg-type]
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Written(out, sink.sha.hexdigest(), sink.size, plan.payload, len(plan.members))


@commands.command("archive")
def archive_cmd(
    path: Path = typer.Argument(..., help=ARTIFACT_HELP),
    out: Path = typer.Option(..., "--out", help="The archive to write (a plain tar)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=CACHE_HELP),
) -> None:
    """Write one deterministic tar of every input the lock names, for all platforms, with an index of sha256s.

    .debs, wheels, sdists and the build inputs of cross-built wheels, the model and the inputs of
    its recipe, the Dockerfile templates, manifest and lock. The same lock gives the same bytes.
    `request-pack fetch ARTIFACT --from FILE` fills a cache from it offline.
    """
    from packager.cache import Cache
    from packager.inputs import archive

    written = write_archive(archive.plan(path, Cache.open(cache)), out)
    console.print(f"{escape(str(written.path))}: {written.size:,} bytes ({written.size / 1e6:.1f} MB), "
                  f"{written.entries} files, sha256:{written.sha256}", soft_wrap=True, highlight=False)


@commands.command()
def reproduce(
    bundle: Path = typer.Argument(..., help="A signed result bundle (.tar.gz or directory)."),
    from_archive: Path = typer.Option(..., "--from", help="The artifact's archive (`request-pack archive`)."),
    trust: list[Path] = typer.Option([], "--trust", help=TRUST_HELP),
    trust_dir: Optional[Path] = typer.Option(None, "--trust-dir", help=TRUST_DIR_HELP),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Work here (fresh cache, artifact, build) and keep it; default a temporary directory."),
) -> None:
    """Rebuild the image a signed bundle names from the archive alone, offline, and compare the index digest.

    1. verify the bundle against the trusted keys; 2. its build record names the lock and the
    platforms; 3. the archive must hold that lock; 4. a fresh cache is filled from the archive
    only; 5. the image is built; 6. its index digest must be the bundle's.
    """
    from packager.errors import CheckFailed

    with tempfile.TemporaryDirectory(prefix="request-pack-reproduce-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        result = reproduce_bundle(bundle, from_archive, trust, trust_dir, work)
    line = (f"bundle {result.expected}\nrebuilt {result.actual} from {escape(str(from_archive))} offline "
            f"({', '.join(result.platforms)}; {result.seconds:.0f} s)")
    if result.actual != result.expected:
        raise CheckFailed(f"not reproduced: the bundle names index {result.expected}, the archive rebuilds {result.actual}")
    console.print(f"{line}\n[green]reproduced[/green]: the same index digest", soft_wrap=True, highlight=False)


@dataclass(frozen=True)
class Reproduced:
    expected: str
    actual: str
    platforms: tuple[str, ...]
    seconds: float


def reproduce_bundle(bundle: Path, from_archive: Path, trust: list[Path], trust_dir: Path | None, work: Path) -> Reproduced:
    import time

    from packager.bundle.archive import safe_unpack
    from packager.bundle.keys import TrustStore
    from packager.bundle.verify import verify_bundle
    from packager.contract import BUILD_RECORD_NAME
    from packager.errors import BadInput, IntegrityError
    from packager.image import build as builder
    from packager.inputs import archive
    from packager.inputs.lock import fetch
    from packager.platforms import Platform

    t0 = time.monotonic()
    # 1. the bundle is signed by a trusted key and consistent (its statement, record and provenance name one image)
    report = verify_bundle(bundle, TrustStore.load(trust, trust_dir))
    if not report.index_digest:
        raise BadInput("names no image index digest", file=bundle)
    # 2. what was built: the lock and the platforms, from the bundle's build record
    root = bundle if bundle.is_dir() else safe_unpack(bundle, work / "bundle")
    record = json.loads((root / BUILD_RECORD_NAME).read_text())
    platforms = tuple(sorted(record["platforms"]))
    # 3. the archive holds exactly that lock
    index = archive.read_index(from_archive)
    if index["lock_sha256"] != record["lock_sha256"]:
        raise IntegrityError(f"{from_archive}: the lock it holds (the bundle's build record names the lock)",
                             record["lock_sha256"], index["lock_sha256"])
    # 4. a fresh cache, filled from the archive alone
    artifact_dir = archive.restore_artifact(from_archive, work / "artifact")
    cache_dir = work / "cache"
    fetch(artifact_dir, from_archive, cache=_open_cache(cache_dir))
    # 5. the build, from that cache only
    opts = builder.BuildOptions(platforms=tuple(Platform(p) for p in platforms), build_root=work / "build",
                                cache_root=cache_dir)
    result = builder.build(artifact_dir, opts)
    return Reproduced(report.index_digest, result.index.digest, platforms, time.monotonic() - t0)


def _open_cache(root: Path):  # type: ignore[no-untyped-def]
    from packager.cache import Cache

    return Cache.open(root)
