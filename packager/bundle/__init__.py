"""Signed result bundles: DSSE envelopes over in-toto statements, Ed25519 keys,
deterministic archives and verification. Verification imports no engine: a
verifier needs neither docker nor the builder.

A bundle is a directory (or the same, packed by :func:`pack` into a
byte-reproducible ``.tar.gz``)::

    metrics.json  predictions.jsonl  system.json     the harness's outputs (packager.results)
    build-record.json  provenance.json               the image: index digest, lock/manifest digests; SLSA v1
    request.yaml  request.lock  labels.tsv           the inputs: manifest, lock, ground truth of the inputs
    logs/ ...  loadgen/ ...                          anything else the run left, bound like the rest
    envelope.dsse.json                               DSSE, payloadType application/vnd.in-toto+json

The envelope's payload is an in-toto Statement v1 whose subjects are every
other file (relative path + sha256) and ``oci-image-index`` (the image index
digest), with predicate type ``https://request-pack.org/attestation/result/v1``
(stage, image, run parameters, metrics, environment, labels digest; see
docs/attestations.md; bundles signed with the older ``request-pack.invalid``
type still verify).

Keys: ``keygen`` writes ``NAME.key`` (PKCS#8 PEM, 0600, optionally encrypted)
and ``NAME.pub``; a key id is the sha256 of the raw 32-byte public key. A trust
directory holds ``*.pub`` (any role), ``authors/*.pub`` and ``evaluators/*.pub``.
Signing an unchanged directory with a second key co-signs it.

``verify`` exit codes (packager.errors): 10 envelope, 11 signature, 12 files vs
subjects, 13 image/lock/manifest, 14 recomputed metrics, 15 schemas, 16 unsafe
archive; the lowest-numbered failed check decides.
"""

from packager.bundle.archive import Limits, pack, safe_unpack
from packager.bundle.dsse import ENVELOPE_NAME, IN_TOTO_PAYLOAD_TYPE, Envelope, pae
from packager.bundle.keys import (
    KeyPair,
    TrustedKey,
    TrustStore,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
)
from packager.bundle.sign import SignedBundle, build_statement, sign_result_dir
from packager.bundle.statement import IMAGE_SUBJECT, PREDICATE_TYPE, Statement
from packager.bundle.verify import CheckResult, Report, verify_bundle

__all__ = [
    "ENVELOPE_NAME",
    "IMAGE_SUBJECT",
    "IN_TOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "CheckResult",
    "Envelope",
    "KeyPair",
    "Limits",
    "Report",
    "SignedBundle",
    "Statement",
    "TrustStore",
    "TrustedKey",
    "build_statement",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "pack",
    "pae",
    "safe_unpack",
    "sign_result_dir",
    "verify_bundle",
]
