"""DSSE: the envelope's wire format and its Pre-Authentication Encoding.

The signature covers PAE(payloadType, payload), never the JSON of the envelope,
so re-encoding the envelope (whitespace, key order, base64 padding style) can
never change what was signed, and the payload type cannot be swapped without
breaking the signature. Spec: https://github.com/secure-systems-lab/dsse
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path

from pydantic import Field, ValidationError

from packager import wire
from packager.errors import EnvelopeError

log = logging.getLogger(__name__)

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
ENVELOPE_NAME = "envelope.dsse.json"
# A real envelope is ~5 KB (a 50,000-image bundle's: 25 subjects and the metrics);
# 8 MiB leaves room for thousands of subjects and long id lists in the metrics, and
# is refused by stat before a byte is read or json.loads has to allocate for it.
MAX_ENVELOPE_BYTES = 8 << 20


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 Pre-Authentication Encoding: lengths are byte counts in ASCII decimal."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


class Signature(wire.WireModel):
    keyid: str = Field("", max_length=256, description="hint only: verification never trusts it to pick the algorithm")
    sig: str = Field(min_length=1, max_length=1024, description="base64 of the signature over the PAE")


# Every signature is tried against every trusted key (a keyid is only a hint): an 8 MiB envelope
# of 70,000 signatures cost 3 s per trusted key. We write one; a co-signed envelope a few.
MAX_SIGNATURES = 16


class Envelope(wire.WireModel):
    payload: str = Field(description="base64 of the serialized statement")
    payloadType: str = Field(min_length=1, max_length=256)
    signatures: list[Signature] = Field(min_length=1, max_length=MAX_SIGNATURES)

    def payload_bytes(self) -> bytes:
        return _b64decode(self.payload, "payload")

    def pae(self) -> bytes:
        return pae(self.payloadType, self.payload_bytes())

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def _b64decode(text: str, field: str) -> bytes:
    # DSSE allows standard or URL-safe base64, with or without padding.
    s = text.strip().replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EnvelopeError(f"envelope {field} is not base64: {e}") from e


def b64encode(data: bytes) -> str:
    return base64.standard_b64encode(data).decode("ascii")


def signature_bytes(signature: Signature) -> bytes:
    return _b64decode(signature.sig, "signatures[].sig")


def parse_envelope(data: bytes, *, source: str = ENVELOPE_NAME, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> Envelope:
    """Parse and shape-check an envelope; a wrong payloadType is refused here, before any crypto."""
    wire.check_size(len(data), MAX_ENVELOPE_BYTES, error=EnvelopeError, shown=source)
    raw = wire.loads(data, error=EnvelopeError, shown=source)  # UTF-8 only, finite numbers, bounded nesting
    try:
        env = Envelope.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])[:200] or "(top level)"  # a key may be a megabyte long
        raise EnvelopeError(f"{source}: {where}: {first['msg']}") from None
    if env.payloadType != payload_type:
        raise EnvelopeError(f"{source}: payloadType is {env.payloadType!r}, expected {payload_type!r}")
    for field, text in [("payload", env.payload), *(("signatures[].sig", s.sig) for s in env.signatures)]:
        try:  # fail early and clearly on bad base64, naming the file
            _b64decode(text, field)
        except EnvelopeError as e:
            raise EnvelopeError(f"{source}: {e}") from None
    return env


def read_envelope(path: Path) -> Envelope:
    """Read and parse an envelope file: a regular file (never a symlink, FIFO or device) within the size cap."""
    if not os.path.lexists(path):
        raise EnvelopeError(f"{path.name}: missing: the bundle is not signed")
    data = wire.read_regular(path, MAX_ENVELOPE_BYTES, error=EnvelopeError, shown=path.name)
    return parse_envelope(data, source=path.name)


def read_payload(envelope: Envelope, *, source: str = "envelope payload") -> object:
    """The payload's JSON, decoded as strictly as the envelope: call only after a signature verified."""
    return wire.loads(envelope.payload_bytes(), error=EnvelopeError, shown=source)
