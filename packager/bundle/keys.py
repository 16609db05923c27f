"""Ed25519 keys: generation, loading, key ids, and the trust store.

A key id is the sha256 of the 32 raw public-key bytes, so anyone holding the
public key can recompute it without knowing our file formats. Private keys are
PKCS#8 PEM (optionally encrypted with a passphrase) written with mode 0600 from
the first byte: the file is created with that mode, never chmod-ed afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from packager import wire
from packager.errors import KeyFileError

log = logging.getLogger(__name__)

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
PASSPHRASE_ENV = "REQUEST_PACK_PASSPHRASE"  # the signing key's passphrase: never on a command line, where ps shows it


def read_passphrase(file: Path | None = None) -> bytes | None:
    """FILE's bytes without trailing line ends, else $REQUEST_PACK_PASSPHRASE, else None (an unencrypted key)."""
    if file is not None:
        data = wire.read_regular(Path(os.path.realpath(file)), MAX_KEY_BYTES,
                                 error=lambda m: KeyFileError(f"cannot read passphrase file: {m}"), shown=str(file))
        return data.rstrip(b"\r\n") or None
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


Role = Literal["author", "evaluator", "any"]
# Sub-directories of a trust directory name the role of the keys inside them.
ROLE_DIRS: dict[str, Role] = {"authors": "author", "evaluators": "evaluator"}


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    keyid: str


def generate_keypair(out_dir: Path, name: str = "signing", passphrase: bytes | None = None, *, overwrite: bool = False) -> KeyPair:
    """Write ``NAME.key`` (0600) and ``NAME.pub`` into ``out_dir``; refuse to clobber a key unless asked."""
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path = out_dir / f"{name}{PRIVATE_SUFFIX}"
    pub_path = out_dir / f"{name}{PUBLIC_SUFFIX}"
    if not overwrite:
        for p in (priv_path, pub_path):
            if p.exists():
                raise KeyFileError("already exists; refusing to overwrite a key (pass --force)", file=p)
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    if overwrite and priv_path.exists():
        priv_path.unlink()
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(priv_path, 0o600)  # the umask may have narrowed it further; make it exact
    pub_path.write_bytes(public_pem(key.public_key()))
    kid = key_id(key.public_key())
    log.info("generated Ed25519 key %s in %s", kid, out_dir)
    return KeyPair(priv_path, pub_path, kid)


MAX_KEY_BYTES = 64 << 10  # a PEM Ed25519 key is ~120 bytes


def _read_key(path: Path, what: str) -> bytes:
    """A key file's bytes: symlinks are the user's own and are followed, but only to a
    regular file of at most MAX_KEY_BYTES (never a FIFO or /dev/zero)."""
    return wire.read_regular(Path(os.path.realpath(path)), MAX_KEY_BYTES,
                             error=lambda m: KeyFileError(f"cannot read {what} key: {m}"), shown=str(path))


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    data = _read_key(path, "private")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); keep private keys 0600", path, mode)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as e:
        # cryptography says "Password was not given but private key is encrypted" and the reverse.
        raise KeyFileError(f"passphrase: {e}", file=path) from e
    except ValueError as e:
        raise KeyFileError(f"not a PEM private key or wrong passphrase ({e})", file=path) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"is a {type(key).__name__}, expected an Ed25519 private key", file=path)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read_key(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise KeyFileError(f"not a PEM public key ({e})", file=path) from e
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"is a {type(key).__name__}, expected an Ed25519 public key", file=path)
    return key


@dataclass(frozen=True)
class TrustedKey:
    keyid: str
    role: Role
    source: Path
    public_key: Ed25519PublicKey = field(repr=False, compare=False)

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class TrustStore:
    """The public keys a verifier accepts, by key id, each with the role it was trusted for."""

    keys: tuple[TrustedKey, ...]

    def __len__(self) -> int:
        return len(self.keys)

    def by_id(self, keyid: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.keyid == keyid), None)

    @classmethod
    def load(cls, files: list[Path] | tuple[Path, ...] = (), directory: Path | None = None) -> "TrustStore":
        """Keys from explicit ``--trust`` files (role "any") and a trust directory.

        In a trust directory, ``authors/*.pub`` are artifact authors,
        ``evaluators/*.pub`` evaluators, and ``*.pub`` at its top level are trusted
        for any role.
        """
        found: dict[str, TrustedKey] = {}

        def add(path: Path, role: Role) -> None:
            pk = load_public_key(path)
            kid = key_id(pk)
            if kid in found and found[kid].role != role:
                # The same key listed under two roles: the broader grant wins.
                role = "any"
            found[kid] = TrustedKey(kid, role, path, pk)

        for p in files:
            add(Path(p), "any")
        if directory is not None:
            if not directory.is_dir():
                raise KeyFileError("trust directory does not exist", file=directory)
            for p in sorted(directory.glob(f"*{PUBLIC_SUFFIX}")):
                add(p, "any")
            for sub, role in ROLE_DIRS.items():
                for p in sorted((directory / sub).glob(f"*{PUBLIC_SUFFIX}")):
                    add(p, role)
        if not found:
            raise KeyFileError("no trusted public keys: give --trust KEY.pub or --trust-dir DIR")
        return cls(tuple(found.values()))
