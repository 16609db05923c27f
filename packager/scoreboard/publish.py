"""Verify, then publish: a bundle reaches the board only after every check of ``verify`` passed.

1. A ``.tar.gz`` is unpacked with the bundle package's safe unpacker into a
   private temporary directory, so the bytes verified are the bytes read.
2. ``packager.bundle.verify_bundle`` runs all checks (signature by a trusted
   key, subjects, image digest, recomputed metrics, schemas); any failure is
   raised as is, with its own exit code and report, and nothing is written.
3. The envelope is read again and its signature re-checked with the key that
   verified it, and every other file we store is checked against the signed
   subject digests: a directory changed between step 2 and now is refused
   instead of publishing numbers nobody verified.
4. The row is inserted with ``ON CONFLICT DO NOTHING`` on the bundle digest,
   the sha256 of the signed statement (which binds every file and the image):
   publishing the same bundle twice, or from two processes at once, leaves one row.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from packager import wire
from packager.bundle import archive
from packager.bundle.dsse import (
    ENVELOPE_NAME,
    MAX_ENVELOPE_BYTES,
    parse_envelope,
    read_payload,
    signature_bytes,
)
from packager.bundle.keys import TrustStore
from packager.bundle.statement import (
    LOCK_NAME,
    MANIFEST_NAME,
    PROVENANCE_NAME,
    ResultPredicate,
    Statement,
)
from packager.bundle.verify import Report, verify_bundle
from packager.contract import BUILD_RECORD_NAME
from packager.errors import BadInput, BundleCheckFailed, SignatureError, SubjectMismatch
from packager.manifest import Manifest
from packager.platforms import Platform
from packager.results import METRICS_NAME
from packager.scoreboard.store import Board, ResultRow, measurement_key, now_iso
from packager.sections import PypiFileSource, UrlSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    bundle: Path
    bundle_digest: str
    inserted: bool  # False: the same signed statement was already on the board
    row: ResultRow
    seconds: float


def publish(bundle: Path, board: Board, trust: TrustStore, *, labels: Path | None = None) -> Published:
    """Verify one bundle (directory or .tar.gz) and put it on the board."""
    start = time.perf_counter()
    row, detail = verified(bundle, trust, labels=labels)
    return _insert(Path(bundle), board, row, detail, start)


def verified(bundle: Path, trust: TrustStore, *, labels: Path | None = None) -> tuple[ResultRow, dict[str, Any]]:
    """Steps 1-3: the row and detail of a fully verified bundle, or its check's error; touches no board."""
    bundle = Path(bundle)
    try:
        if bundle.is_file():
            with tempfile.TemporaryDirectory(prefix="request-pack-publish-") as tmp:
                root = archive.safe_unpack(bundle, Path(tmp) / "bundle")
                return _verified_record(bundle, root, trust, labels)
        elif bundle.is_dir():
            return _verified_record(bundle, bundle, trust, labels)
        else:
            raise BadInput("no such bundle (a directory or .tar.gz)", file=bundle)
    except BundleCheckFailed as e:
        # Keep the class (its exit code) and the report; say which bundle and that nothing was written.
        e.message = f"{bundle}: not published: {e.message}"
        e.args = (e.message,)
        raise


def _insert(bundle: Path, board: Board, row: ResultRow, detail: dict[str, Any], start: float) -> Published:
    inserted = board.insert(row, detail)
    seconds = time.perf_counter() - start
    log.debug("%s %s (%s)", "published" if inserted else "already on the board:", bundle, row.bundle_digest[:19])
    return Published(bundle, row.bundle_digest, inserted, row, seconds)


def publish_iter(bundles: Sequence[Path], board_url: str, trust: TrustStore, *, labels: Path | None = None) -> Iterator[Published]:
    """Publish several bundles through one connection pool, yielding each as it lands.

    Stops at the first refused bundle (raising its check's error); the ones
    before it stay published, and a caller printing as it goes has said so.
    The board is opened only once a first bundle verified: a refused one
    creates no database, migrates nothing and writes no row.
    """
    board: Board | None = None
    try:
        for b in bundles:
            start = time.perf_counter()
            row, detail = verified(b, trust, labels=labels)
            if board is None:
                board = Board(board_url)
            yield _insert(Path(b), board, row, detail, start)
    finally:
        if board is not None:
            board.close()


def publish_all(bundles: Sequence[Path], board_url: str, trust: TrustStore, *, labels: Path | None = None) -> list[Published]:
    return list(publish_iter(bundles, board_url, trust, labels=labels))


# --- the verified record ----------------------------------------------------------


def _verified_record(shown: Path, root: Path, trust: TrustStore, labels: Path | None) -> tuple[ResultRow, dict[str, Any]]:
    report = verify_bundle(root, trust, labels=labels)  # raises the first failed check
    signer = report.signer
    if signer is None:  # verify_bundle never passes without one; refuse loudly if that changes
        raise SignatureError(f"{shown}: verification passed without naming a signer; refusing to publish")

    # Step 3: what we store must be what was verified.
    # Every read bounded and strict, as in verify: the directory may have changed since.
    envelope_bytes = wire.read_regular(root / ENVELOPE_NAME, MAX_ENVELOPE_BYTES, error=SignatureError,
                                       shown=f"{shown}/{ENVELOPE_NAME}")
    envelope = parse_envelope(envelope_bytes, source=f"{shown}/{ENVELOPE_NAME}")
    message = envelope.pae()
    if not any(signer.verifies(signature_bytes(s), message) for s in envelope.signatures):
        raise SignatureError(f"{shown}: envelope changed after verification")
    payload = envelope.payload_bytes()
    payload_json = read_payload(envelope, source=f"{shown}/{ENVELOPE_NAME} payload")
    statement = Statement.model_validate(payload_json)
    subjects = statement.file_subjects()

    def signed_text(name: str) -> str | None:
        if name not in subjects:
            return None
        data = wire.read_regular(root / name, archive.DEFAULT_MAX_ENTRY_BYTES, error=SubjectMismatch, shown=f"{shown}/{name}")
        if hashlib.sha256(data).hexdigest() != subjects[name].sha256:
            raise SubjectMismatch(f"{shown}/{name} changed after verification")
        return wire.decode_utf8(data, error=SubjectMismatch, shown=f"{shown}/{name}")

    def signed_json(name: str) -> object | None:
        text = signed_text(name)
        return None if text is None else wire.loads(text.encode(), error=SubjectMismatch, shown=f"{shown}/{name}")

    manifest_text = signed_text(MANIFEST_NAME)
    manifest = _manifest(manifest_text, shown)
    provenance = signed_json(PROVENANCE_NAME)
    build_record = signed_json(BUILD_RECORD_NAME)
    lock_text = signed_text(LOCK_NAME)

    bundle_digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    row = _row(statement, manifest, manifest_text, bundle_digest, signer.keyid, signer.role)
    detail = {
        "predicate": payload_json["predicate"],  # type: ignore[index]
        "subjects": [s.model_dump(mode="json") for s in statement.subject],
        "provenance": provenance,
        "build_record": build_record,
        "manifest": manifest_text,
        "lock_sha256": subjects[LOCK_NAME].sha256 if lock_text is not None else None,
        "envelope": wire.loads(envelope_bytes, error=SignatureError, shown=f"{shown}/{ENVELOPE_NAME}"),
        "signer": {"keyid": signer.keyid, "role": signer.role},
        "checks": _checks(report),
        "source": shown.name,
    }
    # the class the board stores (derived from the signed predicate), so the row returned is the row stored
    return replace(row, measurement=row.measurement or measurement_key(detail)), detail


def _checks(report: Report) -> list[dict[str, Any]]:
    return [{"number": c.number, "name": c.name, "status": c.status, "detail": c.detail} for c in report.checks]


def _manifest(text: str | None, shown: Path) -> Manifest | None:
    if text is None:
        return None
    import yaml

    # Check 5 of verify already parsed it with the strict loader (no aliases, no
    # duplicate keys); this only turns the same text back into the model, with
    # libyaml when present, since pure-Python parsing dominated publish time.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return Manifest.model_validate(yaml.load(text, Loader=loader))  # noqa: S506 - a safe loader
    except (yaml.YAMLError, ValidationError) as e:
        raise BadInput(f"manifest does not validate after verification: {e}", file=shown / MANIFEST_NAME) from e


def model_name(manifest: Manifest | None) -> str:
    """A human name for the network: the PyPI package, the URL's file without suffix, else the artifact's name."""
    if manifest is None:
        return "unknown"
    src = manifest.model.source
    if isinstance(src, PypiFileSource):
        return src.package
    if isinstance(src, UrlSource):
        name = src.filename or src.url.rstrip("/").rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name
    # A file shipped inside the artifact has no name of its own beyond "model.onnx": the artifact names it.
    return manifest.name


def power_w(p: ResultPredicate) -> float | None:
    """The peak power a row shows: the harness's probe when it measured (its window is the performance
    scenarios), else the runner's host probe (the container's whole run, packager/bundle/power.py), else none."""
    if p.metrics.power.peak_w is not None:
        return p.metrics.power.peak_w
    return p.host_power.peak_w if p.host_power is not None else None


def _row(
    statement: Statement,
    manifest: Manifest | None,
    manifest_text: str | None,
    bundle_digest: str,
    keyid: str,
    role: str,
) -> ResultRow:
    p = statement.predicate
    m = p.metrics
    env = p.environment
    throughput = max((t.images_per_s for t in m.throughput), default=None)
    # The harness describes the backend ("onnxruntime 1.20.1 (CPUExecutionProvider)");
    # the filter wants the framework's name, the version comes from what the image had.
    # A manifest may choose its framework per platform: the row names the one of the platform that ran.
    ran = manifest.framework_for(Platform.parse(m.platform)) if manifest and m.platform in {x.value for x in manifest.platforms} \
        else (manifest.framework if manifest else None)
    framework = ran.name if ran else (m.framework.split() or ["unknown"])[0]
    framework_version = env.frameworks.get(framework) or (ran.version if ran else "")
    if manifest is not None:
        device = next((d.kind for d in manifest.devices if d.required), manifest.devices[0].kind if manifest.devices else "cpu")
        ran_on = Platform.parse(m.platform) if m.platform in {x.value for x in manifest.platforms} else None
        min_top1 = getattr((manifest.run_for(ran_on) if ran_on else manifest.run).stages, p.stage).min_top1
        price = m.price_usd if m.price_usd is not None else manifest.target.price_usd
    else:
        device, min_top1, price = "cpu", None, m.price_usd
    return ResultRow(
        bundle_digest=bundle_digest,
        artifact=p.run.artifact,
        artifact_version=manifest.version if manifest else "",
        manifest_sha256=hashlib.sha256(manifest_text.encode()).hexdigest() if manifest_text else None,
        model=model_name(manifest),
        framework=framework,
        framework_version=framework_version,
        platform=m.platform,
        precision=manifest.model.precision if manifest else "unknown",
        device=device,
        stage=p.stage,
        samples=m.accuracy.samples,
        top1=m.accuracy.top1,
        top5=m.accuracy.top5,
        latency_mean_s=m.latency.mean_s if m.latency else None,
        latency_p90_s=m.latency.p90_s if m.latency else None,
        multistream_p99_s=m.multistream.p99_s if m.multistream else None,
        throughput_ips=throughput,
        price_usd=price,
        power_w=power_w(p),
        min_top1=min_top1,
        image_digest=p.image.index_digest,
        key_id=keyid,
        signer_role=role,
        machine=(env.cpu_model or env.machine)[:200],
        published_at=now_iso(),
    )


def bundles_in(paths: Iterable[Path]) -> list[Path]:
    """Expand arguments: a bundle directory or .tar.gz as is; a directory of bundles into its members."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        # A result directory (signed or not: verify will say it is unsigned) is one bundle.
        if p.is_dir() and not _looks_like_bundle(p):
            members = sorted(c for c in p.iterdir() if (c.is_dir() and _looks_like_bundle(c)) or c.name.endswith(".tar.gz"))
            if not members:
                raise BadInput("neither a bundle nor a directory of bundles", file=p)
            out.extend(members)
        else:
            out.append(p)
    return out


def _looks_like_bundle(d: Path) -> bool:
    return (d / ENVELOPE_NAME).exists() or (d / METRICS_NAME).exists()
