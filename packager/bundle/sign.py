"""Sign a result directory: an in-toto statement over every file and the image,
wrapped in a DSSE envelope signed with an Ed25519 key.

``evaluate`` calls :func:`sign_result_dir` after a run; ``request-pack sign``
is the same call from the command line.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from packager.bundle import archive
from packager.bundle.dsse import (
    ENVELOPE_NAME,
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    Signature,
    b64encode,
    pae,
    parse_envelope,
)
from packager.bundle.keys import key_id, load_private_key
from packager.bundle.power import read_host_power
from packager.bundle.statement import (
    IMAGE_SUBJECT,
    LABELS_NAME,
    BuildRecord,
    ImageRef,
    LabelsRef,
    ResultPredicate,
    RunParameters,
    Statement,
    Subject,
)
from packager.cache import sha256_file
from packager.contract import BUILD_RECORD_NAME
from packager.errors import BadInput, EnvelopeError
from packager.results import METRICS_NAME, SYSTEM_NAME, Metrics, System

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class SignedBundle:
    directory: Path
    envelope_path: Path
    keyid: str
    subjects: int
    index_digest: str
    archive: Path | None = None


def _load(path: Path, model: type[M]) -> M:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError as e:
        raise BadInput("missing from the result directory", file=path) from e
    except ValidationError as e:
        first = e.errors()[0]
        raise BadInput(first["msg"], file=path, field=".".join(str(p) for p in first["loc"]) or None) from e


def build_statement(result_dir: Path) -> Statement:
    """The statement a signer vouches for, computed from the directory alone."""
    tree = archive.scan_tree(result_dir, error=BadInput)
    if tree.others:
        raise BadInput("is a symlink or special file; a result directory holds regular files only", file=result_dir / tree.others[0])
    files = {rel: p for rel, p in tree.files.items() if rel != ENVELOPE_NAME}
    if IMAGE_SUBJECT in files:
        raise BadInput(f"a file may not be named {IMAGE_SUBJECT!r}: that subject name is the image's", file=files[IMAGE_SUBJECT])
    metrics = _load(result_dir / METRICS_NAME, Metrics)
    system = _load(result_dir / SYSTEM_NAME, System)
    record = _load(result_dir / BUILD_RECORD_NAME, BuildRecord)

    subjects = [Subject(name=rel, digest={"sha256": sha256_file(p)}) for rel, p in files.items()]
    subjects.append(Subject(name=IMAGE_SUBJECT, digest={"sha256": record.index_digest.removeprefix("sha256:")}))

    labels = None
    if LABELS_NAME in files:
        with files[LABELS_NAME].open("r", encoding="utf-8") as f:
            count = max(sum(1 for line in f if line.strip()) - 1, 0)  # minus the header
        labels = LabelsRef(name=LABELS_NAME, sha256=subjects[list(files).index(LABELS_NAME)].digest["sha256"], count=count)

    scenarios = ((["SingleStream"] if metrics.latency else []) + (["MultiStream"] if metrics.multistream else [])
                 + (["Offline"] if metrics.throughput else []))
    run = RunParameters(
        artifact=metrics.artifact,
        stage=metrics.stage,
        platform=metrics.platform,
        framework=metrics.framework,
        driver=metrics.driver,
        threads=metrics.threads,
        samples=metrics.accuracy.samples,
        scenarios=scenarios,
        batch_sizes=sorted({t.batch_size for t in metrics.throughput}),
        run_config=metrics.run_config,
    )
    predicate = ResultPredicate(
        stage=metrics.stage,
        image=ImageRef(index_digest=record.index_digest),
        run=run,
        metrics=metrics,
        environment=system,
        labels=labels,
        host_power=read_host_power(result_dir),
    )
    return Statement(subject=subjects, predicate=predicate)


def sign_statement(statement: Statement, key: Ed25519PrivateKey) -> Envelope:
    payload = statement.to_payload()
    sig = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    return Envelope(
        payload=b64encode(payload),
        payloadType=IN_TOTO_PAYLOAD_TYPE,
        signatures=[Signature(keyid=key_id(key.public_key()), sig=b64encode(sig))],
    )


def _cosign(result_dir: Path, mine: Envelope) -> Envelope:
    """Keep the signatures of an existing envelope over the very same statement.

    An evaluator and the artifact's author can then both sign one bundle (the
    verifier's ``--role`` picks whose signature it requires). If the statement
    changed, the old signatures cover other bytes and are dropped.
    """
    path = result_dir / ENVELOPE_NAME
    if not path.is_file():
        return mine
    try:
        old = parse_envelope(path.read_bytes(), source=str(path))
    except EnvelopeError:
        log.warning("replacing unreadable %s", path)
        return mine
    if old.payload_bytes() != mine.payload_bytes():
        log.info("statement changed: replacing %d old signature(s)", len(old.signatures))
        return mine
    new = mine.signatures[0]
    kept = [sig for sig in old.signatures if sig.keyid != new.keyid]
    return mine.model_copy(update={"signatures": [*kept, new]})


def write_envelope(result_dir: Path, envelope: Envelope) -> Path:
    path = result_dir / ENVELOPE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(envelope.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def sign_result_dir(
    result_dir: Path,
    key_path: Path,
    *,
    passphrase: bytes | None = None,
    archive_path: Path | None = None,
) -> SignedBundle:
    """Write ``envelope.dsse.json`` into ``result_dir``; optionally pack the bundle.

    Signing an unchanged directory again with another key adds a signature
    (co-signing); any change to the files replaces the envelope.
    """
    if not result_dir.is_dir():
        raise BadInput("not a directory", file=result_dir)
    if archive_path is not None and archive_path.resolve().is_relative_to(result_dir.resolve()):
        raise BadInput("the archive cannot be written inside the directory it packs", file=archive_path)
    key = load_private_key(key_path, passphrase)
    statement = build_statement(result_dir)
    envelope = _cosign(result_dir, sign_statement(statement, key))
    path = write_envelope(result_dir, envelope)
    kid = key_id(key.public_key())
    log.info("signed %d subjects of %s with key %s (%d signature(s))", len(statement.subject), result_dir, kid[:16], len(envelope.signatures))
    packed = archive.pack(result_dir, archive_path) if archive_path else None
    return SignedBundle(
        directory=result_dir,
        envelope_path=path,
        keyid=kid,
        subjects=len(statement.subject),
        index_digest=statement.predicate.image.index_digest,
        archive=packed,
    )


def statement_json(statement: Statement) -> str:
    """For humans: the statement pretty-printed (the signed bytes are compact)."""
    return json.dumps(json.loads(statement.to_payload()), indent=2, sort_keys=True)
