"""DSSE PAE and envelope parsing, and interoperability with independent
implementations: securesystemslib's DSSE verifies our envelopes (and we verify
its), and in-toto-attestation's Statement validator accepts our statement."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from _bundle_fixture import make_result_dir
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib import dsse  # independent DSSE implementation (test extra)

from packager.bundle.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    Signature,
    b64encode,
    pae,
    parse_envelope,
)
from packager.bundle.keys import TrustedKey, TrustStore, key_id
from packager.bundle.sign import build_statement, sign_statement
from packager.errors import EnvelopeError


def test_pae_matches_the_spec_vector() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_pae_counts_bytes_not_characters() -> None:
    # "é" is two UTF-8 bytes: a character count would say 1.
    assert pae("t/é", b"\xff\x00") == b"DSSEv1 4 t/\xc3\xa9 2 \xff\x00"
    assert pae("", b"") == b"DSSEv1 0  0 "


def _envelope_bytes(**overrides: object) -> bytes:
    env = {"payload": b64encode(b"{}"), "payloadType": IN_TOTO_PAYLOAD_TYPE, "signatures": [{"keyid": "k", "sig": b64encode(b"s" * 64)}]}
    env.update(overrides)
    return json.dumps(env).encode()


def test_parse_accepts_a_wellformed_envelope_and_urlsafe_base64() -> None:
    env = parse_envelope(_envelope_bytes(payload=base64.urlsafe_b64encode(b"\xfb\xff{}").decode().rstrip("=")))
    assert env.payload_bytes() == b"\xfb\xff{}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_envelope_bytes()[:40], "not valid JSON (truncated or corrupt?)"),
        (b"", "not valid JSON"),
        (_envelope_bytes(payloadType="application/json"), "payloadType is 'application/json', expected 'application/vnd.in-toto+json'"),
        (_envelope_bytes(signatures=[]), "signatures: List should have at least 1 item"),
        (_envelope_bytes(payload="***"), "payload is not base64"),
        (_envelope_bytes(extra=1), "extra: Extra inputs are not permitted"),
        (json.dumps([1]).encode(), "(top level)"),
    ],
    ids=["truncated", "empty", "wrong-payload-type", "no-signatures", "bad-base64", "unknown-field", "not-an-object"],
)
def test_parse_rejects_malformed_envelopes(data: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope(data)
    assert message in str(info.value)
    assert info.value.return_code == 10


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Envelope, Ed25519PrivateKey]:
    root = make_result_dir(tmp_path_factory.mktemp("dsse") / "result")
    key = Ed25519PrivateKey.generate()
    return root, sign_statement(build_statement(root), key), key


def test_securesystemslib_verifies_our_envelope(signed: tuple[Path, Envelope, Ed25519PrivateKey]) -> None:
    from securesystemslib.signer import SSlibKey

    _, envelope, key = signed
    theirs = dsse.Envelope.from_dict(json.loads(envelope.to_json()))
    assert theirs.pae() == envelope.pae()
    pub = SSlibKey.from_crypto(key.public_key(), keyid=key_id(key.public_key()))
    accepted = theirs.verify([pub], threshold=1)
    assert list(accepted) == [key_id(key.public_key())]

    # and the same library rejects it once the payload changes
    theirs.payload = theirs.payload.replace(b'"top1":', b'"top1":0.99,"x":')
    from securesystemslib.exceptions import VerificationError

    with pytest.raises(VerificationError):
        theirs.verify([pub], threshold=1)


def test_we_verify_an_envelope_securesystemslib_signed(signed: tuple[Path, Envelope, Ed25519PrivateKey]) -> None:
    from securesystemslib.signer import CryptoSigner, SSlibKey

    root, envelope, key = signed
    pub = SSlibKey.from_crypto(key.public_key(), keyid=key_id(key.public_key()))
    theirs = dsse.Envelope(envelope.payload_bytes(), IN_TOTO_PAYLOAD_TYPE, {})
    theirs.sign(CryptoSigner(key, pub))
    ours = parse_envelope(json.dumps(theirs.to_dict()).encode())
    trusted = TrustedKey(key_id(key.public_key()), "any", root, key.public_key())
    sig = base64.b64decode(ours.signatures[0].sig)
    assert ours.signatures[0].keyid == trusted.keyid
    assert trusted.verifies(sig, ours.pae())
    assert not trusted.verifies(sig, pae(IN_TOTO_PAYLOAD_TYPE, ours.payload_bytes() + b" "))
    assert TrustStore((trusted,)).by_id(trusted.keyid) is trusted


def test_in_toto_attestation_validates_our_statement(signed: tuple[Path, Envelope, Ed25519PrivateKey]) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement as ItStatement

    _, envelope, _ = signed
    pb = json_format.Parse(envelope.payload_bytes(), statement_pb2.Statement())
    ItStatement.copy_from_pb(pb).validate()  # raises ValueError on a malformed statement
    assert pb.predicate_type == "https://request-pack.org/attestation/result/v1"
    names = {s.name for s in pb.subject}
    assert {"metrics.json", "predictions.jsonl", "logs/run.log", "oci-image-index"} <= names
    assert all(len(s.digest["sha256"]) == 64 for s in pb.subject)


def test_signature_model_rejects_empty_sig() -> None:
    with pytest.raises(ValueError):
        Signature(keyid="x", sig="")
