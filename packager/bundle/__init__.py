"""Signed result bundles: DSSE envelopes over in-toto statements, Ed25519 keys,
deterministic archives and verification. Verification imports no engine: a
verifier needs neither docker nor the builder.
"""

from .archive import Limits, pack, safe_unpack
from .dsse import ENVELOPE_NAME, IN_TOTO_PAYLOAD_TYPE, Envelope, pae
from .keys import KeyPair, TrustedKey, TrustStore, generate_keypair, key_id, load_private_key, load_public_key
from .sign import SignedBundle, build_statement, sign_result_dir
from .statement import IMAGE_SUBJECT, PREDICATE_TYPE, Statement
from .verify import CheckResult, Report, verify_bundle

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
