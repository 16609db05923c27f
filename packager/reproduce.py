"""Rebuild in ten years: one archive of every input, and a signed bundle's image rebuilt from it offline.

``inputs.archive`` decides what goes into the archive (every file the lock pins, for all
platforms, plus the index); ``write_archive`` streams it with the image writer's
deterministic tar code (one tar writer in the package), which ``inputs`` may not import.
``reproduce_bundle`` is the evidence behind a "Results Reproduced" badge: verify the
bundle, fill a fresh cache from the archive alone, build, compare index digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path


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


def harness_sources(root: Path | None = None) -> list:  # list[inputs.archive.Source]
    """The request-pack files this checkout's harness layer is made from (``image.plan.harness_files``), for the archive."""
    from packager.image.plan import PACKAGE_ROOT, harness_files
    from packager.inputs.archive import Source

    root = root or PACKAGE_ROOT
    out = [Source(src, src.relative_to(root.parent).as_posix(), 0o755 if src.stat().st_mode & 0o111 else 0o644)
           for src, _ in harness_files(root)]
    # and the Dockerfile templates: in no image, but the lock records their sha256 and a build refuses a stale
    # lock, so a later checkout with another Dockerfile.j2 rebuilds with the archived one (plan.templates_beside)
    templates = root.parent / "dockerfiles"
    return out + [Source(t, t.relative_to(root.parent).as_posix(), 0o644)
                  for t in (sorted(templates.glob("*.j2")) if templates.is_dir() else []) if t.is_file()]


def plan_archive(artifact_dir: Path, cache):  # type: ignore[no-untyped-def]
    """``inputs.archive.plan`` with request-pack's own harness source: another checkout rebuilds the same image."""
    from packager.inputs import archive

    return archive.plan(artifact_dir, cache, harness_sources())


def write_archive(plan, out: Path) -> Written:  # type: ignore[no-untyped-def]
    """Stream ``plan`` (``inputs.archive.Plan``) into ``out`` as a plain tar: sorted, mtime 0, owner 0, mode 0644/0755."""
    from packager.image.writer import oci

    top = plan.top
    files = [oci.Entry(f"{top}/index.json", "file", size=len(plan.index), open=lambda: io.BytesIO(plan.index))]
    files += [oci.Entry(f"{top}/{m.path}", "file", mode=m.mode, size=m.size, open=(lambda p=m.source: open(p, "rb")))
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


@dataclass(frozen=True)
class Reproduced:
    expected: str
    actual: str
    platforms: tuple[str, ...]
    seconds: float
    harness: str  # "archive": request-pack's source the archive carries; "checkout": this one's (an older archive)
    differing: tuple[str, ...] = ()  # "linux/amd64 harness" for each layer whose digest is not the bundle's
    lock_sha256: str = ""
    archive_sha256: str = ""
    bundle_digest: str = ""  # sha256 of the bundle's signed statement (the board's bundle_digest)
    bundle_signer: str = ""
    artifact: str = ""
    nix_digest: str | None = None  # the index the Nix derivation built (GNU tar and Nix's JSON as second writers)

    @property
    def matches(self) -> bool:
        return self.expected == self.actual


def reproduce_bundle(bundle: Path, from_archive: Path, trust: list[Path], trust_dir: Path | None, work: Path,
                     *, with_nix: bool = False) -> Reproduced:
    import time

    from packager.bundle.archive import safe_unpack
    from packager.bundle.dsse import ENVELOPE_NAME, parse_envelope
    from packager.bundle.keys import TrustStore
    from packager.bundle.verify import verify_bundle
    from packager.cache import Cache, sha256_file
    from packager.contract import BUILD_RECORD_NAME
    from packager.errors import BadInput, IntegrityError
    from packager.image import build as builder
    from packager.inputs import archive
    from packager.inputs.lock import fetch
    from packager.platforms import Platform

    t0 = time.monotonic()
    # 1. the bundle is signed by a trusted key and consistent (its statement, record and provenance name one image)
    report = verify_bundle(bundle, TrustStore.load(trust, trust_dir))
    if not report.ok:
        raise report.first_failure()  # type: ignore[misc]
    if not report.index_digest or report.signer is None:
        raise BadInput("names no image index digest", file=bundle)
    # 2. what was built: the lock and the platforms, from the bundle's build record
    root = bundle if bundle.is_dir() else safe_unpack(bundle, work / "bundle")
    record = json.loads((root / BUILD_RECORD_NAME).read_text())
    envelope = parse_envelope((root / ENVELOPE_NAME).read_bytes())  # verified above: the bundle's identity
    bundle_digest = "sha256:" + hashlib.sha256(envelope.payload_bytes()).hexdigest()
    platforms = tuple(sorted(record["platforms"]))
    # 3. the archive holds exactly that lock
    index = archive.read_index(from_archive)
    if index["lock_sha256"] != record["lock_sha256"]:
        raise IntegrityError(f"{from_archive}: the lock it holds (the bundle's build record names the lock)",
                             record["lock_sha256"], index["lock_sha256"])
    # 4. a fresh cache, filled from the archive alone; request-pack's own harness source from it too
    artifact_dir = archive.restore_artifact(from_archive, work / "artifact")
    cache_dir = work / "cache"
    # inside the fresh cache: the Nix expression pins files of the cache or the repository only
    harness_root = archive.restore_sources(from_archive, cache_dir / "request-pack-source")
    fetch(artifact_dir, from_archive, cache=Cache.open(cache_dir))
    # 5. the build, from that cache only
    opts = builder.BuildOptions(platforms=tuple(Platform(p) for p in platforms), build_root=work / "build",
                                cache_root=cache_dir, **({"harness_root": harness_root} if harness_root else {}))
    result = builder.build(artifact_dir, opts)
    differing = tuple(f"{p} {mine['role']}" for p in platforms
                      for mine, theirs in zip(result.record["platforms"][p]["layers"], record["platforms"][p]["layers"])
                      if mine["digest"] != theirs["digest"])
    nix_digest = None
    if with_nix:  # 6. the same plan in the Nix sandbox, where GNU tar and Nix's JSON write parts of it again
        from packager.image import nix

        expr = nix.generate(artifact_dir, out_dir=work / "nix", platforms=opts.platforms, cache_root=cache_dir,
                            **({"harness_root": harness_root} if harness_root else {}))
        nix_digest = nix.realise(expr, cache=cache_dir).index_digest
    return Reproduced(report.index_digest, result.index.digest, platforms, time.monotonic() - t0,
                      "archive" if harness_root else "checkout", differing, record["lock_sha256"],
                      sha256_file(from_archive), bundle_digest, report.signer.keyid, record["artifact"], nix_digest)


def reproduction_statement(result: Reproduced):  # type: ignore[no-untyped-def]
    """The statement ``reproduce --sign`` signs: both digests, the bundle and the archive; no verdict of its own."""
    from packager import __version__
    from packager.bundle import reproduction as rec

    return rec.make_statement(rec.ReproducedPredicate(
        bundle=rec.BundleRef(statement_digest=result.bundle_digest, index_digest=result.expected,
                             artifact=result.artifact, platforms=list(result.platforms), signer=result.bundle_signer),
        archive=rec.ArchiveRef(sha256=result.archive_sha256, lock_sha256=result.lock_sha256),
        rebuilt_index_digest=result.actual, nix_index_digest=result.nix_digest, harness=result.harness,
        differing_layers=list(result.differing),
        builder={"request-pack": __version__}))
