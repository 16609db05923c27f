"""Ed25519 key generation, loading, key ids and the trust store."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from packager.bundle.keys import (
    TrustStore,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
)
from packager.errors import KeyFileError


def test_keygen_writes_0600_private_key_and_matching_key_id(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        pair = generate_keypair(tmp_path / "keys")
    finally:
        os.umask(old)
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    pub = load_public_key(pair.public_path)
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert pair.keyid == hashlib.sha256(raw).hexdigest() == key_id(pub)
    priv = load_private_key(pair.private_path)
    assert key_id(priv.public_key()) == pair.keyid
    assert b"ENCRYPTED" not in pair.private_path.read_bytes()


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    second = generate_keypair(tmp_path, overwrite=True)
    assert second.keyid != first.keyid
    assert stat.S_IMODE(second.private_path.stat().st_mode) == 0o600


def test_passphrase_protects_the_private_key(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path, passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in pair.private_path.read_bytes()
    assert key_id(load_private_key(pair.private_path, b"correct horse").public_key()) == pair.keyid
    with pytest.raises(KeyFileError, match="passphrase"):
        load_private_key(pair.private_path)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(pair.private_path, b"battery staple")


def test_non_ed25519_and_garbage_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(
        ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "ec.pub").write_bytes(
        ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(KeyFileError, match="expected an Ed25519 private key"):
        load_private_key(tmp_path / "ec.key")
    with pytest.raises(KeyFileError, match="expected an Ed25519 public key"):
        load_public_key(tmp_path / "ec.pub")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_public_key(tmp_path / "absent.pub")
    assert KeyFileError("x").return_code == 2


def test_trust_dir_roles(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    alice = generate_keypair(keys, "alice")
    eve = generate_keypair(keys, "eve")
    both = generate_keypair(keys, "both")
    trust = tmp_path / "trust"
    for sub, pair in (("authors", alice), ("evaluators", eve), ("authors", both), ("evaluators", both)):
        (trust / sub).mkdir(parents=True, exist_ok=True)
        (trust / sub / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    (trust / "README").write_text("not a key, ignored\n")
    store = TrustStore.load([], trust)
    roles = {k.keyid: k.role for k in store.keys}
    assert roles == {alice.keyid: "author", eve.keyid: "evaluator", both.keyid: "any"}
    assert store.by_id(alice.keyid) is not None and store.by_id("0" * 64) is None


def test_empty_trust_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no trusted public keys"):
        TrustStore.load([], None)
    with pytest.raises(KeyFileError, match="trust directory does not exist"):
        TrustStore.load([], tmp_path / "nope")


def test_a_passphrase_file_is_read_whole_without_its_trailing_line_ends(tmp_path: Path, monkeypatch) -> None:
    from packager.bundle.keys import PASSPHRASE_ENV, read_passphrase

    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    (tmp_path / "p").write_bytes(b"correct horse\r\n")
    assert read_passphrase(tmp_path / "p") == b"correct horse"
    (tmp_path / "empty").write_bytes(b"\n")
    assert read_passphrase(tmp_path / "empty") is None
    assert read_passphrase(None) is None
    monkeypatch.setenv(PASSPHRASE_ENV, "battery staple")
    assert read_passphrase(None) == b"battery staple"
