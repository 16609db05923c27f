"""A signed reproduce record: "this bundle's image was rebuilt from this archive and gave this index digest".

``request-pack reproduce BUNDLE --from ARCHIVE --sign KEY`` writes one: a DSSE envelope over an
in-toto Statement v1 whose subjects are the rebuilt OCI index and the archive, and whose
predicate (``https://request-pack.org/attestation/reproduced/v1``) names the bundle (by the
digest of its signed statement, the board's ``bundle_digest``), the index digest the bundle
claims and the one the rebuild gave. It carries no "matched" flag: whoever reads it compares
the two digests itself, so a mismatch is recorded as honestly as a match.

The board verifies it (a trusted key, the exact type, strict JSON, the model) before it
stores it, and awards a badge only from what the verified statement says.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ConfigDict, Field, ValidationError

from packager import wire
from packager.attestation import REPRODUCED_PREDICATE_TYPE, STATEMENT_TYPE
from packager.bundle.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    MAX_ENVELOPE_BYTES,
    Envelope,
    Signature,
    b64encode,
    pae,
    parse_envelope,
    read_payload,
    signature_bytes,
)
from packager.bundle.keys import TrustedKey, TrustStore, key_id
from packager.errors import EnvelopeError, SignatureError

IMAGE_SUBJECT = "oci-image-index"  # the rebuilt index
ARCHIVE_SUBJECT = "inputs-archive"

_OciDigest = Field(pattern=r"^sha256:[0-9a-f]{64}$")
_Sha256Hex = Field(pattern=r"^[0-9a-f]{64}$")
# Strings a board stores and shows: bounded like the rest (an 8 MiB envelope could hold one string of 6 MB).
_Short = Annotated[str, Field(min_length=1, max_length=64)]
_Line = Annotated[str, Field(max_length=200)]


class _Wire(wire.WireModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class _Subject(_Wire):
    name: Literal["oci-image-index", "inputs-archive"]
    digest: dict[Literal["sha256"], str] = Field(min_length=1, max_length=1)


class BundleRef(_Wire):
    statement_digest: str = _OciDigest  # sha256 of the bundle's signed statement: the board's bundle_digest
    index_digest: str = _OciDigest  # the image index the bundle's signed statement names
    artifact: str = Field(min_length=1, max_length=200)
    platforms: list[_Short] = Field(min_length=1, max_length=8)
    signer: str = Field(pattern=r"^[0-9a-f]{64}$")  # the key that signed the bundle


class ArchiveRef(_Wire):
    sha256: str = _Sha256Hex
    lock_sha256: str = _Sha256Hex


class ReproducedPredicate(_Wire):
    reproduced_version: Literal[1] = 1
    bundle: BundleRef
    archive: ArchiveRef
    rebuilt_index_digest: str = _OciDigest
    # `reproduce --nix`: the index the Nix derivation built from the same archive (None: not run)
    nix_index_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$")
    harness: Literal["archive", "checkout"]  # where request-pack's harness source came from
    differing_layers: list[_Line] = Field(default_factory=list, max_length=64)
    builder: dict[_Short, _Line] = Field(max_length=8)  # {"request-pack": version}


class ReproducedStatement(_Wire):
    type_: Literal[STATEMENT_TYPE] = Field(STATEMENT_TYPE, alias="_type")
    subject: list[_Subject] = Field(min_length=2, max_length=2)
    predicateType: Literal[REPRODUCED_PREDICATE_TYPE] = REPRODUCED_PREDICATE_TYPE
    predicate: ReproducedPredicate

    def to_payload(self) -> bytes:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")).encode()


def make_statement(predicate: ReproducedPredicate) -> ReproducedStatement:
    return ReproducedStatement(subject=[
        _Subject(name=IMAGE_SUBJECT, digest={"sha256": predicate.rebuilt_index_digest.split(":", 1)[1]}),
        _Subject(name=ARCHIVE_SUBJECT, digest={"sha256": predicate.archive.sha256}),
    ], predicate=predicate)


def sign(statement: ReproducedStatement, key: Ed25519PrivateKey) -> Envelope:
    payload = statement.to_payload()
    return Envelope(payload=b64encode(payload), payloadType=IN_TOTO_PAYLOAD_TYPE,
                    signatures=[Signature(keyid=key_id(key.public_key()), sig=b64encode(key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))))])


@dataclass(frozen=True)
class Reproduction:
    """A verified reproduce record: what its signed statement says, and who signed it."""

    statement_digest: str  # sha256 of the signed payload: the record's identity on a board
    signer: TrustedKey
    predicate: ReproducedPredicate
    envelope_json: str

    @property
    def bundle_digest(self) -> str:
        return self.predicate.bundle.statement_digest

    @property
    def index_digest(self) -> str:
        return self.predicate.bundle.index_digest

    @property
    def rebuilt_digest(self) -> str:
        return self.predicate.rebuilt_index_digest

    @property
    def matches(self) -> bool:
        return self.rebuilt_digest == self.index_digest


def verify_bytes(data: bytes, trust: TrustStore, *, source: str) -> Reproduction:
    """Signature by a trusted key first, then the strict payload and the model; one-line errors naming ``source``."""
    env = parse_envelope(data, source=source)  # bounded, strict JSON, payloadType
    message = env.pae()
    signer = None
    for sig in env.signatures:
        raw = signature_bytes(sig)
        hinted = trust.by_id(sig.keyid) if sig.keyid else None
        signer = next((k for k in ([hinted] if hinted else trust.keys) if k.verifies(raw, message)), None)
        if signer is not None:
            break
    if signer is None:
        raise SignatureError(f"{source}: verifies with none of the {len(trust)} trusted key(s)")
    try:
        st = ReproducedStatement.model_validate(read_payload(env, source=source))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])[:200] or "(top level)"  # a key may be a megabyte long
        raise EnvelopeError(f"{source}: not a reproduce record ({REPRODUCED_PREDICATE_TYPE}): {where}: {first['msg']}") from None
    subjects = {s.name: s.digest["sha256"] for s in st.subject}
    if f"sha256:{subjects.get(IMAGE_SUBJECT)}" != st.predicate.rebuilt_index_digest or \
            subjects.get(ARCHIVE_SUBJECT) != st.predicate.archive.sha256:
        raise EnvelopeError(f"{source}: its subjects are not the rebuilt index and the archive its predicate names")
    digest = "sha256:" + hashlib.sha256(env.payload_bytes()).hexdigest()
    return Reproduction(digest, signer, st.predicate, env.to_json())


def verify_file(path: Path, trust: TrustStore) -> Reproduction:
    data = wire.read_regular(Path(path), MAX_ENVELOPE_BYTES, error=EnvelopeError, shown=str(path))
    return verify_bytes(data, trust, source=str(path))
