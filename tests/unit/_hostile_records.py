"""A generator of hostile reproduce records, as ``board add-reproduction`` could be handed them.

The genuine record is what ``reproduce --sign`` writes (``reproduce.reproduction_statement``
over a ``Reproduced`` result, signed by ``bundle.reproduction.sign``). Cases attack the
file (only a regular file within 8 MiB is read), the envelope (strict JSON, shape, bounded
signatures, parsed before any crypto), the signature (a trusted key over the PAE, checked
before the payload is parsed) and the signed statement itself (signed by the *trusted* key:
what a careless or compromised evaluator could send; strict JSON, the exact model, bounded
strings). Codes: 10 envelope or statement, 11 signature. Used by ``test_hostile_records.py``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _hostile import GiB, MiB

from packager.bundle.dsse import IN_TOTO_PAYLOAD_TYPE, pae
from packager.bundle.keys import load_private_key


@dataclass(frozen=True)
class GenuineRecord:
    file: Path  # the signed record
    key: Path  # trusted private key
    stranger: Path  # an untrusted private key
    pub: Path  # the trusted public key
    statement: dict  # the signed statement, as JSON


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    make: Callable[[GenuineRecord, Path], Path]
    code: int
    message: str


CASES: list[Case] = []


def case(name: str, group: str, code: int, message: str):
    def add(make: Callable[[GenuineRecord, Path], Path]) -> Callable[[GenuineRecord, Path], Path]:
        CASES.append(Case(name, group, make, code, message))
        return make
    return add


def out(w: Path, data: bytes) -> Path:
    (w / "r.reproduced.dsse.json").write_bytes(data)
    return w / "r.reproduced.dsse.json"


def envelope(payload: bytes, key: Path | None, *, ptype: str = IN_TOTO_PAYLOAD_TYPE, extra_sigs: int = 0,
             signed: bytes | None = None, keyid: str = "") -> dict:
    """An envelope over ``payload``, signed by ``key`` over the PAE of ``signed`` (default: the payload)."""
    sigs = [{"keyid": "", "sig": base64.b64encode(os.urandom(64)).decode()} for _ in range(extra_sigs)]
    if key is not None:
        sk = load_private_key(key)
        sigs.append({"keyid": keyid, "sig": base64.b64encode(sk.sign(pae(ptype, signed if signed is not None else payload))).decode()})
    return {"payload": base64.b64encode(payload).decode(), "payloadType": ptype, "signatures": sigs}


def signed(g: GenuineRecord, payload: bytes) -> bytes:
    return json.dumps(envelope(payload, g.key)).encode()


def statement_bytes(st: dict) -> bytes:
    return json.dumps(st, sort_keys=True, separators=(",", ":")).encode()


def field(doc: bytes, text: bytes) -> bytes:
    body = doc.rstrip()
    assert body.endswith(b"}")
    return body[:-1] + b", " + text + b"}"


# --- 1. the file: a regular file within 8 MiB, never followed ---------------------------------------


def _sparse(g: GenuineRecord, w: Path) -> Path:
    p = out(w, g.file.read_bytes())
    os.truncate(p, 3 * GiB)
    return p


def _link(target: Callable[[GenuineRecord, Path], object]) -> Callable[[GenuineRecord, Path], Path]:
    def make(g: GenuineRecord, w: Path) -> Path:
        p = w / "r.reproduced.dsse.json"
        p.symlink_to(target(g, w))  # type: ignore[arg-type]
        return p
    return make


case("file-missing", "file", 10, "missing")(lambda g, w: w / "r.reproduced.dsse.json")
case("file-symlink-dev-zero", "file", 10, "is a symlink")(_link(lambda g, w: "/dev/zero"))
case("file-symlink-to-the-genuine-record", "file", 10, "is a symlink")(_link(lambda g, w: g.file))
case("file-fifo", "file", 10, "is a FIFO")(lambda g, w: (os.mkfifo(w / "r.reproduced.dsse.json"), w / "r.reproduced.dsse.json")[1])
case("file-directory", "file", 10, "is a directory")(
    lambda g, w: ((w / "r.reproduced.dsse.json").mkdir(), w / "r.reproduced.dsse.json")[1])
case("file-sparse-3GiB", "file", 10, "over the 8388608-byte limit")(_sparse)
case("file-9MiB", "file", 10, "over the 8388608-byte limit")(
    lambda g, w: out(w, field(g.file.read_bytes(), b'"x": "' + b"y" * (9 * MiB) + b'"')))
case("file-char-device", "file", 10, "only regular files are read")(lambda g, w: Path("/dev/null"))

# --- 2. the envelope: strict JSON and shape, before any crypto -------------------------------------

for label, encode, message in [
    ("utf16-le-bom", lambda b: b.decode().encode("utf-16"), "UTF-16"),
    ("utf16-be", lambda b: b.decode().encode("utf-16-be"), "NUL bytes"),
    ("utf32", lambda b: b.decode().encode("utf-32"), "UTF-32"),
    ("utf8-bom", lambda b: b"\xef\xbb\xbf" + b, "byte-order mark"),
    ("latin1-byte", lambda b: field(b, b'"x": "\xe9"'), "not UTF-8"),
    ("nested-100000", lambda b: b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels deep"),
    ("nested-in-field", lambda b: field(b, b'"x": ' + b"[" * 5000 + b"]" * 5000), "nested 5001 levels deep"),
    ("nan-field", lambda b: field(b, b'"x": NaN'), "NaN is not a finite number"),
    ("infinity-field", lambda b: field(b, b'"x": -Infinity'), "-Infinity is not a finite number"),
    ("duplicate-payload", lambda b: field(b, b'"payload": "e30="'), "duplicate key 'payload'"),
    ("huge-int", lambda b: field(b, b'"x": ' + b"9" * 5000), "Exceeds the limit"),
    ("truncated", lambda b: b[:100], "not valid JSON"),
    ("empty", lambda b: b"", "not valid JSON"),
    ("not-an-object", lambda b: b"[]", "Input should be"),
    ("null", lambda b: b"null", "Input should be"),
    ("extra-field", lambda b: field(b, b'"x": 1'), "Extra inputs are not permitted"),
]:
    case(f"envelope-{label}", "envelope", 10, message)(lambda g, w, encode=encode: out(w, encode(g.file.read_bytes())))


def _env_edit(edit: Callable[[dict], None]) -> Callable[[GenuineRecord, Path], Path]:
    def make(g: GenuineRecord, w: Path) -> Path:
        env = json.loads(g.file.read_bytes())
        edit(env)
        return out(w, json.dumps(env).encode())
    return make


for label, edit, message in [
    ("payload-not-base64", lambda e: e.update(payload="!!not base64!!"), "r.reproduced.dsse.json: envelope payload is not base64"),
    ("payload-an-int", lambda e: e.update(payload=7), "payload: Input should be a valid string"),
    ("payload-missing", lambda e: e.pop("payload"), "payload: Field required"),
    ("payload-type-bundle-like", lambda e: e.update(payloadType="application/json"), "payloadType is 'application/json'"),
    ("payload-type-1MiB", lambda e: e.update(payloadType="x" * MiB), "payloadType: String should have at most 256"),
    ("signatures-empty", lambda e: e.update(signatures=[]), "signatures: List should have at least 1 item"),
    ("signatures-not-a-list", lambda e: e.update(signatures={"sig": "x"}), "signatures: Input should be a valid list"),
    ("sig-not-base64", lambda e: e["signatures"][0].update(sig="%%%"), "r.reproduced.dsse.json: envelope signatures[].sig is not base64"),
    ("sig-empty", lambda e: e["signatures"][0].update(sig=""), "signatures.0.sig"),
    ("sig-1MiB", lambda e: e["signatures"][0].update(sig="A" * MiB), "signatures.0.sig: String should have at most 1024"),
    ("keyid-1MiB", lambda e: e["signatures"][0].update(keyid="a" * MiB), "signatures.0.keyid"),
    ("keyid-an-object", lambda e: e["signatures"][0].update(keyid={"a": 1}), "signatures.0.keyid"),
    ("signature-extra-field", lambda e: e["signatures"][0].update(cert="x"), "signatures.0.cert"),
]:
    case(f"envelope-{label}", "envelope", 10, message)(_env_edit(edit))

# 17 signatures, one of them genuine: accepted before (each was tried against every trusted key).
case("envelope-17-signatures-one-valid", "envelope", 10, "signatures: List should have at most 16 items")(
    lambda g, w: out(w, json.dumps(envelope(statement_bytes(g.statement), g.key, extra_sigs=16)).encode()))
case("envelope-60000-signatures", "envelope", 10, "signatures: List should have at most 16 items")(
    lambda g, w: out(w, json.dumps(envelope(statement_bytes(g.statement), g.key, extra_sigs=60_000)).encode()))

# --- 3. the signature: a trusted key over the PAE, before the payload is parsed ----------------------

case("sig-by-a-stranger", "signature", 11, "verifies with none of the 1 trusted key(s)")(
    lambda g, w: out(w, json.dumps(envelope(statement_bytes(g.statement), g.stranger)).encode()))


def _altered(g: GenuineRecord, w: Path) -> Path:
    env = json.loads(g.file.read_bytes())
    payload = base64.b64decode(env["payload"]).replace(b'"harness":"archive"', b'"harness":"checkout"')
    env["payload"] = base64.b64encode(payload).decode()
    return out(w, json.dumps(env).encode())


case("sig-payload-altered-after-signing", "signature", 11, "verifies with none")(_altered)
case("sig-over-the-raw-payload-not-the-pae", "signature", 11, "verifies with none")(
    lambda g, w: out(w, json.dumps({**envelope(statement_bytes(g.statement), None), "signatures": [{"keyid": "", "sig": base64.b64encode(
        load_private_key(g.key).sign(statement_bytes(g.statement))).decode()}]}).encode()))
case("sig-over-another-payload-type", "signature", 11, "verifies with none")(
    lambda g, w: out(w, json.dumps({**envelope(statement_bytes(g.statement), g.key, ptype="application/json"),
                                    "payloadType": IN_TOTO_PAYLOAD_TYPE}).encode()))
case("sig-10-bytes", "signature", 11, "verifies with none")(
    _env_edit(lambda e: e["signatures"][0].update(sig=base64.b64encode(b"0123456789").decode())))
case("sig-trusted-keyid-hint-garbage", "signature", 11, "verifies with none")(
    _env_edit(lambda e: e["signatures"][0].update(sig=base64.b64encode(os.urandom(64)).decode())))
case("sig-16-garbage-signatures", "signature", 11, "verifies with none")(
    lambda g, w: out(w, json.dumps(envelope(statement_bytes(g.statement), None, extra_sigs=16)).encode()))
# The payload is parsed only after the signature: garbage a stranger signed is a signature error, not a parse error.
case("sig-stranger-signs-a-json-bomb", "signature", 11, "verifies with none")(
    lambda g, w: out(w, json.dumps(envelope(b"[" * 100_000 + b"]" * 100_000, g.stranger)).encode()))
case("sig-stranger-signs-utf16", "signature", 11, "verifies with none")(
    lambda g, w: out(w, json.dumps(envelope(statement_bytes(g.statement).decode().encode("utf-16"), g.stranger)).encode()))

# --- 4. the statement, signed by the trusted key: strict JSON, the exact model, bounded ---------------

for label, encode, message in [
    ("utf16", lambda b: b.decode().encode("utf-16"), "UTF-16"),
    ("utf8-bom", lambda b: b"\xef\xbb\xbf" + b, "byte-order mark"),
    ("nested", lambda b: field(b, b'"x": ' + b"[" * 10_000 + b"]" * 10_000), "nested 10001 levels deep"),
    ("duplicate-key", lambda b: field(b, b'"predicateType": "x"'), "duplicate key 'predicateType'"),
    ("nan", lambda b: field(b, b'"x": NaN'), "NaN is not a finite number"),
    ("1e999", lambda b: field(b, b'"x": 1e999'), "overflows to infinity"),
    ("truncated", lambda b: b[:-10], "not valid JSON"),
    ("a-list", lambda b: b"[1, 2]", "not a reproduce record"),
    ("null", lambda b: b"null", "not a reproduce record"),
    ("empty", lambda b: b"", "not valid JSON"),
]:
    case(f"statement-{label}", "statement", 10, message)(
        lambda g, w, encode=encode: out(w, signed(g, encode(statement_bytes(g.statement)))))


def _st(edit: Callable[[dict], None]) -> Callable[[GenuineRecord, Path], Path]:
    def make(g: GenuineRecord, w: Path) -> Path:
        st = json.loads(statement_bytes(g.statement))
        edit(st)
        return out(w, signed(g, statement_bytes(st)))
    return make


def _p(**change: object) -> Callable[[dict], None]:
    return lambda st: st["predicate"].update(change)


def _b(**change: object) -> Callable[[dict], None]:
    return lambda st: st["predicate"]["bundle"].update(change)


HEX = "sha256:" + "a" * 64
for label, edit, message in [
    ("bundle-statement-type", lambda st: st.update(predicateType="https://request-pack.org/attestation/result/v1"), "predicateType"),
    ("statement-type-v0", lambda st: st.update(_type="https://in-toto.io/Statement/v0.1"), "_type"),
    ("three-subjects", lambda st: st["subject"].append(st["subject"][0]), "subject: List should have at most 2"),
    ("one-subject", lambda st: st["subject"].pop(), "subject: List should have at least 2"),
    ("subject-unknown-name", lambda st: st["subject"][0].update(name="../etc/passwd"), "subject.0.name"),
    ("subject-two-digests", lambda st: st["subject"][0]["digest"].update(sha512="0" * 128), "subject.0.digest"),
    ("subjects-disagree", lambda st: st["subject"][0]["digest"].update(sha256="b" * 64), "its subjects are not"),
    ("rebuilt-uppercase", _p(rebuilt_index_digest="sha256:" + "A" * 64), "rebuilt_index_digest"),
    ("rebuilt-an-int", _p(rebuilt_index_digest=1), "rebuilt_index_digest"),
    ("version-2", _p(reproduced_version=2), "reproduced_version"),
    ("harness-other", _p(harness="pypi"), "predicate.harness"),
    ("matched-flag", _p(matched=True), "predicate.matched: Extra inputs are not permitted"),
    ("nix-digest-bad", _p(nix_index_digest="sha256:xyz"), "nix_index_digest"),
    ("builder-9-keys", _p(builder={f"k{i}": "v" for i in range(9)}), "predicate.builder"),
    ("builder-value-1MiB", _p(builder={"request-pack": "v" * MiB}), "predicate.builder.request-pack"),
    ("builder-key-1MiB", _p(builder={"k" * MiB: "1"}), "predicate.builder"),
    ("builder-value-an-int", _p(builder={"request-pack": 1}), "predicate.builder.request-pack"),
    ("differing-65", _p(differing_layers=["x"] * 65), "differing_layers"),
    ("differing-item-1MiB", _p(differing_layers=["x" * MiB]), "differing_layers.0"),
    ("platforms-9", _b(platforms=["linux/amd64"] * 9), "bundle.platforms"),
    ("platform-1MiB", _b(platforms=["p" * MiB]), "bundle.platforms.0"),
    ("platforms-empty", _b(platforms=[]), "bundle.platforms"),
    ("artifact-300", _b(artifact="a" * 300), "bundle.artifact"),
    ("artifact-empty", _b(artifact=""), "bundle.artifact"),
    ("signer-not-hex", _b(signer="z" * 64), "bundle.signer"),
    ("statement-digest-missing", lambda st: st["predicate"]["bundle"].pop("statement_digest"), "bundle.statement_digest"),
    ("archive-sha-short", lambda st: st["predicate"]["archive"].update(sha256="ab"), "archive.sha256"),
    ("index-digest-md5", _b(index_digest="md5:" + "a" * 32), "bundle.index_digest"),
    ("predicate-a-list", lambda st: st.update(predicate=[HEX]), "predicate: Input should be"),
]:
    case(f"statement-{label}", "statement", 10, message)(_st(edit))
