"""A generator of hostile bundles, archives and manifests, as an attacker would send them.

Each :class:`Case` builds one hostile input from a genuine signed bundle (made by
``_bundle_fixture``) and says how it must be refused: the exit code (2 bad input,
10-16 the verify classes) and a piece of the one-line message. Cases come in
classes (the issue's list); most exist in directory and archive form. Used by
``tests/unit/test_hostile.py`` (every case, in-process and through the CLI) and
``benchmarks/hostile.py`` (time and memory of ``verify`` and ``publish`` per case).

Signed cases (non-finite metrics, bad subject names, bad files bound by the
statement) are re-signed with the *trusted* key: they are what a careless or
compromised author could send, and must be refused after the signature passed.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packager.bundle.dsse import ENVELOPE_NAME, pae
from packager.bundle.keys import load_private_key

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Genuine:
    """A signed bundle directory and the key pair that signed it (the verifier trusts ``pub``)."""

    dir: Path
    key: Path
    pub: Path


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # the class of attack
    form: str  # "dir", "archive" or "manifest" (an artifact directory for `validate`)
    make: Callable[[Genuine, Path], Path]  # (genuine, empty work dir) -> the input to hand over
    code: int
    message: str  # a piece of the one-line refusal


# --- building blocks ----------------------------------------------------------------------


def copy(g: Genuine, work: Path) -> Path:
    return Path(shutil.copytree(g.dir, work / "bundle", symlinks=True))


def _regular_files(d: Path) -> dict[str, Path]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(d).as_posix()
            if rel != ENVELOPE_NAME and stat.S_ISREG(p.lstat().st_mode):
                out[rel] = p
    return out


def statement(g: Genuine) -> dict:
    env = json.loads((g.dir / ENVELOPE_NAME).read_bytes())
    return json.loads(base64.b64decode(env["payload"]))


def sign_payload(d: Path, key: Path, payload: bytes) -> None:
    """Write an envelope over exactly these payload bytes, signed by ``key``."""
    sk = load_private_key(key)
    ptype = "application/vnd.in-toto+json"
    sig = base64.b64encode(sk.sign(pae(ptype, payload))).decode()
    env = {"payload": base64.b64encode(payload).decode(), "payloadType": ptype, "signatures": [{"keyid": "", "sig": sig}]}
    (d / ENVELOPE_NAME).write_text(json.dumps(env))


def resign(g: Genuine, d: Path, edit: Callable[[dict], None] | None = None, *, hashed: bool = True) -> None:
    """Re-sign ``d`` with the trusted key: subjects recomputed from its regular files, then ``edit``."""
    st = statement(g)
    if hashed:
        image = [s for s in st["subject"] if s["name"] == "oci-image-index"]
        st["subject"] = [{"name": rel, "digest": {"sha256": hashlib.sha256(p.read_bytes()).hexdigest()}}
                         for rel, p in sorted(_regular_files(d).items())] + image
        labels = st["predicate"].get("labels")
        if labels and (d / labels["name"]).is_file():
            labels["sha256"] = hashlib.sha256((d / labels["name"]).read_bytes()).hexdigest()
    if edit:
        edit(st)
    sign_payload(d, g.key, json.dumps(st, sort_keys=True).encode())


def tar_of(d: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]] = (), *, fmt: int = tarfile.PAX_FORMAT,
           skip: tuple[str, ...] = ()) -> bytes:
    """An uncompressed tar of ``d`` (regular files and dirs, sorted) followed by ``extra`` members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for p in sorted(d.rglob("*")):
            rel = p.relative_to(d).as_posix()
            if rel in skip:
                continue
            info = tar.gettarinfo(str(p), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with p.open("rb") as f:
                    tar.addfile(info, f)
            elif info.isdir():
                tar.addfile(info)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes = b"x", **attrs: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    if info.type != tarfile.REGTYPE and info.type != tarfile.AREGTYPE:
        info.size = 0
        return info, None
    return info, data


def gz(data: bytes, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def write(work: Path, data: bytes, name: str = "bundle.tar.gz") -> Path:
    (work / name).write_bytes(data)
    return work / name


def genuine_tar(g: Genuine, *extra: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    return tar_of(g.dir, list(extra), fmt=fmt)


def strip_end(tar: bytes) -> bytes:
    """The tar without its end-of-archive blocks and record padding (to append members by hand)."""
    end = len(tar)
    while end >= 512 and tar[end - 512:end] == bytes(512):
        end -= 512
    return tar[:end]


def raw_header(name: str, size: int, type_: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = type_
    return info.tobuf(format=tarfile.USTAR_FORMAT)


@functools.lru_cache(maxsize=4)
def zeros_gz(n: int) -> bytes:
    """gzip of n zero bytes, made in chunks (a bomb built in well under a second)."""
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    parts = [c.compress(chunk) for _ in range(n // MiB)]
    return b"".join(parts) + c.compress(bytes(n % MiB)) + c.flush()


def pax_header(records: dict[str, str], type_: bytes = tarfile.XHDTYPE) -> bytes:
    body = b""
    for k, v in records.items():
        rec = f" {k}={v}\n".encode()
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        body += str(n).encode() + rec
    return raw_header("././@PaxHeader", len(body), type_) + body + bytes(-len(body) % 512)


def _declared(rel: str, size: int) -> Callable[[Genuine, Path], Path]:
    """The archive form of a huge file: its tar header declares the size, a little data follows."""
    def make(g: Genuine, w: Path) -> Path:
        return write(w, gz(strip_end(tar_of(g.dir, skip=(rel,))) + raw_header(rel, size) + bytes(MiB)))
    return make


# --- the cases --------------------------------------------------------------------------------

CASES: list[Case] = []


def case(name: str, group: str, form: str, code: int, message: str) -> Callable[[Callable[[Genuine, Path], Path]], Callable[[Genuine, Path], Path]]:
    def add(make: Callable[[Genuine, Path], Path]) -> Callable[[Genuine, Path], Path]:
        CASES.append(Case(name, group, form, make, code, message))
        return make
    return add


def both(name: str, group: str, code_dir: int, msg_dir: str, code_archive: int, msg_archive: str,
         mutate: Callable[[Genuine, Path], None], archive: Callable[[Genuine, Path], Path] | None = None) -> None:
    """One attack on the bundle's files, as a directory and as the same directory packed (or ``archive``'s form)."""
    def as_dir(g: Genuine, work: Path) -> Path:
        d = copy(g, work)
        mutate(g, d)
        return d

    def packed(g: Genuine, work: Path) -> Path:
        return write(work, gz(tar_of(as_dir(g, work))))

    as_archive = archive or packed

    CASES.append(Case(f"{name}[dir]", group, "dir", as_dir, code_dir, msg_dir))
    CASES.append(Case(f"{name}[archive]", group, "archive", as_archive, code_archive, msg_archive))


# 1. The gzip and tar streams: nothing after the end, bounded expansion, well-formed.

for label, tail in {"garbage": b"PWNED" * 100, "second-gzip-member": gz(b"evil" * 300), "zeros": bytes(4096),
                    "one-byte": b"\x00"}.items():
    case(f"gzip-trailing-{label}", "archive-stream", "archive", 16, "data after the end of the gzip stream")(
        lambda g, w, tail=tail: write(w, gz(genuine_tar(g)) + tail))

for label, tail in {"member-after-eof": raw_header("evil.txt", 4) + b"evil".ljust(512, b"\0"),
                    "text-after-eof": b"appended after the end marker", "far-after-eof": bytes(80 << 10) + b"x"}.items():
    case(f"tar-trailing-{label}", "archive-stream", "archive", 16, "data after the tar end-of-archive marker")(
        lambda g, w, tail=tail: write(w, gz(genuine_tar(g) + tail)))

case("gzip-bomb-in-a-member", "archive-stream", "archive", 16, "gzip bomb")(
    lambda g, w: write(w, gz(strip_end(genuine_tar(g)) + raw_header("logs/big.log", 60 * MiB) + bytes(60 * MiB) + bytes(1024),
                             level=9)))
# 1 GiB of zeros: read as an empty tar (a zero block is the end marker) and refused after 64 KiB of padding.
case("gzip-bomb-plain", "archive-stream", "archive", 16, "data after the tar end-of-archive marker")(
    lambda g, w: write(w, zeros_gz(GiB)))
case("gzip-bomb-after-header", "archive-stream", "archive", 16, "gzip bomb")(
    lambda g, w: write(w, gz(raw_header("predictions.jsonl", 64 * MiB) + bytes(64 * MiB), level=9)))
case("not-gzip", "archive-stream", "archive", 16, "not a gzip file")(lambda g, w: write(w, b"PK\x03\x04zip"))
case("empty-archive", "archive-stream", "archive", 16, "not a gzip file")(lambda g, w: write(w, b""))
case("truncated-gzip", "archive-stream", "archive", 16, "truncated")(
    lambda g, w: write(w, gz(genuine_tar(g))[: -200]))
case("truncated-tar", "archive-stream", "archive", 16, "truncated")(
    lambda g, w: write(w, gz(genuine_tar(g)[:1536 + 100])))
case("gzip-of-garbage", "archive-stream", "archive", 16, "not a valid tar archive")(
    lambda g, w: write(w, gz(b"not a tar at all " * 200)))
case("bad-header-checksum", "archive-stream", "archive", 16, "not a valid tar archive")(
    lambda g, w: write(w, gz(strip_end(genuine_tar(g)) + b"\x01" * 512 + bytes(1024))))
case("corrupt-deflate", "archive-stream", "archive", 16, "corrupt gzip stream")(
    lambda g, w: write(w, (lambda b: b[:200] + bytes(64) + b[264:])(gz(genuine_tar(g)))))
case("archive-is-a-fifo", "archive-stream", "archive", 2, "no such bundle")(
    lambda g, w: (os.mkfifo(w / "bundle.tar.gz"), w / "bundle.tar.gz")[1])

# 2. Headers and sizes: caps checked on the tar headers, before extraction starts.

case("pax-header-300MiB-declared", "headers", "archive", 16, "extended header of 314572800 bytes")(
    lambda g, w: write(w, gz(raw_header("././@PaxHeader", 300 * MiB, tarfile.XHDTYPE) + bytes(2 * MiB))))
case("pax-header-1MiB", "headers", "archive", 16, "over the 65536-byte limit")(
    lambda g, w: write(w, gz(strip_end(genuine_tar(g)) + pax_header({"comment": "x" * MiB}) + raw_header("a", 1)
                              + b"x".ljust(512, b"\0") + bytes(1024))))
case("gnu-longname-1MiB", "headers", "archive", 16, "over the 65536-byte limit")(
    lambda g, w: write(w, gz(raw_header("././@LongLink", MiB, tarfile.GNUTYPE_LONGNAME) + b"a" * MiB + bytes(1024))))
case("pax-sets-size", "headers", "archive", 16, "pax header sets 'size'")(
    lambda g, w: write(w, gz(pax_header({"size": str(9 * GiB)}) + raw_header("a", 0) + bytes(1024))))
case("pax-gnu-sparse", "headers", "archive", 16, "GNU.sparse")(
    lambda g, w: write(w, gz(pax_header({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}) + raw_header("a", 0) + bytes(1024))))
case("global-pax-path", "headers", "archive", 16, "pax header sets 'path'")(
    lambda g, w: write(w, gz(pax_header({"path": "../evil"}, tarfile.XGLTYPE) + raw_header("a", 0) + bytes(1024))))
case("extended-header-then-end", "headers", "archive", 16, "extended header with no member")(
    lambda g, w: write(w, gz(pax_header({"path": "a"}) + bytes(1024))))
case("entry-over-64MiB-declared", "headers", "archive", 16, "exceeds the 67108864 byte limit")(
    lambda g, w: write(w, gz(strip_end(genuine_tar(g)) + raw_header("predictions2.jsonl", 3 * GiB) + bytes(4096))))
case("total-over-256MiB-declared", "headers", "archive", 16, "bytes unpacked")(
    lambda g, w: write(w, gz(b"".join(raw_header(f"f{i}", 60 * MiB) + bytes(60 * MiB) for i in range(5)), level=1)))
@functools.lru_cache(maxsize=1)
def tiny_members(n: int) -> bytes:
    return gz(b"".join(raw_header(f"d/{i}", 0) for i in range(n)) + bytes(1024), level=1)


case("200000-tiny-members", "headers", "archive", 16, "more than 4096 entries")(lambda g, w: write(w, tiny_members(200_000)))
case("5000-tiny-members", "headers", "archive", 16, "more than 4096 entries")(
    lambda g, w: write(w, gz(strip_end(genuine_tar(g)) + b"".join(raw_header(f"logs/{i}", 0) for i in range(5000)) + bytes(1024))))
case("5000-pax-headers", "headers", "archive", 16, "more than 4096 extended headers")(
    lambda g, w: write(w, gz(b"".join(pax_header({"comment": hashlib.sha256(b"%d" % i).hexdigest() * 4}) for i in range(5000))
                             + raw_header("a", 0) + bytes(1024))))

for label, kind, extra in [("symlink-out", "symlink to '/etc/passwd'", dict(type=tarfile.SYMTYPE, linkname="/etc/passwd")),
                           ("symlink-in", "symlink to 'metrics.json'", dict(type=tarfile.SYMTYPE, linkname="metrics.json")),
                           ("hardlink", "hard link to '/etc/shadow'", dict(type=tarfile.LNKTYPE, linkname="/etc/shadow")),
                           ("char-device", "device file", dict(type=tarfile.CHRTYPE, devmajor=1, devminor=5)),
                           ("block-device", "device file", dict(type=tarfile.BLKTYPE, devmajor=8, devminor=0)),
                           ("fifo", "FIFO", dict(type=tarfile.FIFOTYPE)),
                           ("gnu-sparse", "sparse file", dict(type=tarfile.GNUTYPE_SPARSE)),
                           ("contiguous", "unsupported entry type", dict(type=tarfile.CONTTYPE))]:
    case(f"member-{label}", "headers", "archive", 16, kind)(
        lambda g, w, extra=extra: write(w, gz(genuine_tar(g, member("extra", **extra)))))

# 3. Names: paths that escape, names too long or too deep, not NFC, colliding.

for label, name, message in [("absolute", "/tmp/request-pack-hostile-evil", "absolute path"),
                             ("dot-dot", "logs/../../evil", "'..' path component"),
                             ("backslash", "logs\\..\\evil", "backslash"),
                             ("300-byte-name", "a" * 300, "over the 255-byte limit"),
                             ("300-byte-component", "logs/" + "b" * 300 + "/x", "over the 255-byte limit"),
                             ("deep-path", "/".join(["d"] * 200) + "/x", "levels deep"),
                             ("long-path", "/".join(["e" * 200] * 8), "over the 1024-byte path limit"),
                             ("nfd-name", "logs/cafe\u0301.log", "not in Unicode NFC form"),
                             ("newline-in-name", "logs/evil\nerror: forged line", "control character"),
                             ("escape-in-name", "logs/\x1b[31mred", "control character")]:
    case(f"name-{label}", "names", "archive", 16, message)(
        lambda g, w, name=name: write(w, gz(genuine_tar(g, member(name)))))

for label, name, message in [("pax-path-dot-dot", "../../etc/cron.d/evil", "'..' path component"),
                             ("pax-path-absolute", "/etc/evil", "absolute path"),
                             ("pax-path-nfd", "cafe\u0301", "not in Unicode NFC form")]:
    case(f"name-{label}", "names", "archive", 16, message)(
        lambda g, w, name=name: write(w, gz(strip_end(genuine_tar(g)) + pax_header({"path": name}) + raw_header("harmless", 1)
                                             + b"x".ljust(512, b"\0") + bytes(1024))))

for label, a, b, message in [("nfc-nfd-collision", "logs/caf\u00e9.log", "logs/cafe\u0301.log", "not in Unicode NFC form"),
                             ("case-collision", "Metrics.json", "", "collide"),
                             ("case-collision-dir", "LOGS/x", "logs/y", "collide"),
                             ("sharp-s-collision", "logs/stra\u00dfe", "logs/STRASSE", "collide"),
                             ("duplicate", "logs/run.log", "logs/run.log", "duplicate entry"),
                             ("file-then-dir", "logs/run.log/x", "", "passes through a non-directory")]:
    def _collide(g: Genuine, w: Path, a: str = a, b: str = b) -> Path:
        extra = [member(a)] + ([member(b)] if b else [])
        return write(w, gz(genuine_tar(g, *extra)))
    case(f"name-{label}", "names", "archive", 16, message)(_collide)


def _mkfile(d: Path, rel: str, data: bytes = b"x") -> None:
    p = d / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


case("dir-name-nfd", "names", "dir", 16, "not in Unicode NFC form")(
    lambda g, w: (lambda d: (_mkfile(d, "logs/cafe\u0301.log"), d)[1])(copy(g, w)))
case("dir-name-case-collision", "names", "dir", 16, "collide")(
    lambda g, w: (lambda d: (_mkfile(d, "Metrics.json", b"{}"), d)[1])(copy(g, w)))
case("dir-name-control", "names", "dir", 16, "control character")(
    lambda g, w: (lambda d: (_mkfile(d, "logs/a\nb"), d)[1])(copy(g, w)))
case("dir-name-not-utf8", "names", "dir", 16, "not valid UTF-8")(
    lambda g, w: (lambda d: (open(os.path.join(bytes(d), b"logs", b"\xff\xfe.log"), "wb").close(), d)[1])(copy(g, w)))
case("dir-deep-tree", "names", "dir", 16, "levels deep")(
    lambda g, w: (lambda d: (_mkfile(d, "/".join(["d"] * 40) + "/x"), d)[1])(copy(g, w)))
case("dir-long-path", "names", "dir", 16, "over the 1024-byte path limit")(
    lambda g, w: (lambda d: (_mkfile(d, "/".join(["e" * 250] * 5) + "/x"), d)[1])(copy(g, w)))
case("dir-5000-files", "names", "dir", 16, "more than 4096 entries")(
    lambda g, w: (lambda d: ([(d / "logs" / str(i)).touch() for i in range(5000)], d)[1])(copy(g, w)))

for label, name, message in [("subject-dot-dot", "../evil", "not a plain relative path"),
                             ("subject-absolute", "/etc/passwd", "not a plain relative path"),
                             ("subject-nfd", "cafe\u0301", "not in Unicode NFC form"),
                             ("subject-300-bytes", "s" * 300, "over the 255-byte limit"),
                             ("subject-control", "a\nb", "control character"),
                             ("subject-case-collision", "METRICS.JSON", "collide")]:
    def _subject(g: Genuine, d: Path, name: str = name) -> None:
        resign(g, d, lambda st: st["subject"].insert(0, {"name": name, "digest": {"sha256": "0" * 64}}))
    both(label, "names", 12, message, 12, message, _subject)

# 4. The envelope: read only if a regular file within its cap, UTF-8 JSON only.


def _envelope_bytes(g: Genuine) -> bytes:
    return (g.dir / ENVELOPE_NAME).read_bytes()


def field(doc: bytes, text: bytes) -> bytes:
    """A JSON object's bytes with one more member (``"key": value``) written in by hand."""
    body = doc.rstrip()
    assert body.endswith(b"}")
    return body[:-1] + b", " + text + b"}\n"


for label, encode, message in [
    ("utf16-le-bom", lambda b: b.decode().encode("utf-16"), "UTF-16"),
    ("utf16-be", lambda b: b.decode().encode("utf-16-be"), "NUL bytes"),
    ("utf32", lambda b: b.decode().encode("utf-32"), "UTF-32"),
    ("utf8-bom", lambda b: b"\xef\xbb\xbf" + b, "byte-order mark"),
    ("latin1-byte", lambda b: b[:-2] + b"\xe9}", "not UTF-8"),
    ("nested-100000", lambda b: b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels deep"),
    ("nested-in-field", lambda b: field(b, b'"x": ' + b"[" * 5000 + b"]" * 5000), "nested 5001 levels deep"),
    ("nan-field", lambda b: field(b, b'"x": NaN'), "NaN is not a finite number"),
    ("infinity-field", lambda b: field(b, b'"x": -Infinity'), "-Infinity is not a finite number"),
    ("duplicate-payload-key", lambda b: field(b, b'"payload": "e30="'), "duplicate key 'payload'"),
    ("huge-int", lambda b: field(b, b'"x": ' + b"9" * 5000), "Exceeds the limit"),
    ("truncated", lambda b: b[:100], "not valid JSON"),
    ("not-an-object", lambda b: b"[]", "Input should be"),
]:
    def _env(g: Genuine, d: Path, encode: Callable[[bytes], bytes] = encode) -> None:
        (d / ENVELOPE_NAME).write_bytes(encode(_envelope_bytes(g)))
    both(f"envelope-{label}", "envelope", 10, message, 10, message, _env)


def _env_sparse(g: Genuine, d: Path) -> None:
    with (d / ENVELOPE_NAME).open("r+b") as f:
        f.truncate(3 * GiB)


def _env_just_over(g: Genuine, d: Path) -> None:
    with (d / ENVELOPE_NAME).open("r+b") as f:
        f.truncate(9 * MiB)


both("envelope-sparse-3GiB", "sizes", 16, "over the 67108864-byte limit", 16, "exceeds the 67108864 byte limit", _env_sparse,
     _declared(ENVELOPE_NAME, 3 * GiB))
# Packed, 9 MiB of zeros is also a compression ratio of ~1000:1.
both("envelope-9MiB", "sizes", 10, "over the 8388608-byte limit", 16, "compression ratio over 100:1", _env_just_over)


def _env_link(target: str) -> Callable[[Genuine, Path], Path]:
    def make(g: Genuine, w: Path) -> Path:
        d = copy(g, w)
        (d / ENVELOPE_NAME).unlink()
        (d / ENVELOPE_NAME).symlink_to(target)
        return d
    return make


case("envelope-symlink-dev-zero", "files", "dir", 10, "not a regular file")(_env_link("/dev/zero"))
case("envelope-symlink-outside", "files", "dir", 10, "not a regular file")(_env_link("/etc/hostname"))
case("envelope-fifo", "files", "dir", 10, "not a regular file")(
    lambda g, w: (lambda d: ((d / ENVELOPE_NAME).unlink(), os.mkfifo(d / ENVELOPE_NAME), d)[2])(copy(g, w)))
case("envelope-directory", "files", "dir", 10, "not a regular file")(
    lambda g, w: (lambda d: ((d / ENVELOPE_NAME).unlink(), (d / ENVELOPE_NAME).mkdir(), d)[2])(copy(g, w)))

# 5. The signed payload (signed by the trusted key): finite numbers, UTF-8, bounded nesting.


def _payload_text(g: Genuine, d: Path, text: bytes) -> None:
    sign_payload(d, g.key, text)


def _metrics_value(value: str) -> Callable[[Genuine, Path], None]:
    """The predicate's top-1 replaced by a hostile number token, signed by the trusted key."""
    def mutate(g: Genuine, d: Path) -> None:
        doc = statement(g)
        doc["predicate"]["metrics"]["accuracy"]["top1"] = "__HOSTILE__"
        _payload_text(g, d, json.dumps(doc, sort_keys=True).replace('"__HOSTILE__"', value).encode())
    return mutate


for label, value, message in [("infinity", "Infinity", "Infinity is not a finite number"),
                              ("minus-infinity", "-Infinity", "-Infinity is not a finite number"),
                              ("nan", "NaN", "NaN is not a finite number"),
                              ("1e999", "1e999", "overflows to infinity"),
                              ("minus-1e999", "-1e999", "overflows to infinity")]:
    both(f"payload-{label}", "payload", 10, message, 10, message, _metrics_value(value))


def _throughput_inf(g: Genuine, d: Path) -> None:
    doc = statement(g)
    doc["predicate"]["metrics"]["throughput"][0]["images_per_s"] = "__H__"
    _payload_text(g, d, json.dumps(doc, sort_keys=True).replace('"__H__"', "Infinity").encode())


both("payload-throughput-infinity", "payload", 10, "Infinity is not a finite number", 10, "not a finite number", _throughput_inf)

for label, encode, message in [
    ("utf16", lambda b: b.decode().encode("utf-16"), "UTF-16"),
    ("utf8-bom", lambda b: b"\xef\xbb\xbf" + b, "byte-order mark"),
    ("nested", lambda b: field(b, b'"x": ' + b"[" * 10_000 + b"]" * 10_000), "nested 10001 levels deep"),
    ("duplicate-key", lambda b: field(b, b'"predicateType": "x"'), "duplicate key 'predicateType'"),
]:
    def _payload(g: Genuine, d: Path, encode: Callable[[bytes], bytes] = encode) -> None:
        _payload_text(g, d, encode(json.dumps(statement(g), sort_keys=True).encode()))
    both(f"payload-{label}", "payload", 10, message, 10, message, _payload)

# 6. The files a signed statement binds: regular files within their caps, strict formats.


def _sparse(rel: str, size: int) -> Callable[[Genuine, Path], None]:
    def mutate(g: Genuine, d: Path) -> None:
        with (d / rel).open("r+b") as f:
            f.truncate(size)
    return mutate


both("predictions-sparse-3GiB", "sizes", 16, "over the 67108864-byte limit", 16, "exceeds the 67108864 byte limit",
     _sparse("predictions.jsonl", 3 * GiB), _declared("predictions.jsonl", 3 * GiB))
both("labels-sparse-2GiB", "sizes", 16, "over the 67108864-byte limit", 16, "exceeds the 67108864 byte limit",
     _sparse("labels.tsv", 2 * GiB), _declared("labels.tsv", 2 * GiB))


def _signed(rel: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Genuine, Path], None]:
    """Replace one file's bytes and re-sign, so only the schema checks can refuse it."""
    def mutate(g: Genuine, d: Path) -> None:
        old = (d / rel).read_bytes() if (d / rel).exists() else b""
        _mkfile(d, rel, data(old) if callable(data) else data)
        resign(g, d)
    return mutate


for label, rel, data, message in [
    ("metrics-infinity", "metrics.json", lambda b: b.replace(b'"top1": ', b'"top1": Infinity, "was": ', 1), "Infinity is not a finite number"),
    ("metrics-nan-in-dict", "metrics.json", lambda b: field(b, b'"preprocessing": {"x": NaN}'), "NaN is not a finite number"),
    ("metrics-utf16", "metrics.json", lambda b: b.decode().encode("utf-16"), "UTF-16"),
    ("metrics-nested", "metrics.json", b"[" * 200_000, "levels deep"),
    ("system-bom", "system.json", lambda b: b"\xef\xbb\xbf" + b, "byte-order mark"),
    ("build-record-duplicate-key", "build-record.json", lambda b: field(b, b'"artifact": "other"'), "duplicate key 'artifact'"),
    ("log-json-nested", "logs/harness.json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "levels deep"),
    ("log-json-9MiB", "logs/harness.json", b"[" + b",".join(b"%d" % (i * 7919 % 1000003) for i in range(1_300_000)) + b"]",
     "over the 8388608-byte limit"),
    ("predictions-nan", "predictions.jsonl", lambda b: re.sub(rb'"probs":\[[0-9.e-]+', b'"probs":[NaN', b, count=1), "finite number"),
    ("predictions-infinity", "predictions.jsonl", lambda b: re.sub(rb'"probs":\[[0-9.e-]+', b'"probs":[-Infinity', b, count=1),
     "finite number"),
    ("predictions-long-line", "predictions.jsonl", lambda b: b'{"id":"' + b"a" * 100_000 + b'"}\n' + b, "line limit"),
    ("predictions-250000-lines", "predictions.jsonl",
     b"".join(b'{"id":"%d","top5":[1],"probs":[0.5],"output_sha256":"%s"}\n' % (i, b"0" * 64) for i in range(250_000)),
     "more than 200000 predictions"),
    ("predictions-utf16", "predictions.jsonl", lambda b: b.decode().encode("utf-16"), "predictions.jsonl line 1"),
    ("labels-300000-rows", "labels.tsv", b"file\tclass_index\n" + b"".join(b"%d\t1\n" % i for i in range(300_000)), "more than 200000 labels"),
    ("labels-long-line", "labels.tsv", lambda b: b + b"x" * 10_000 + b"\t1\n", "line limit"),
    ("labels-latin1", "labels.tsv", lambda b: b + b"caf\xe9\t1\n", "not UTF-8"),
    ("manifest-nested", "request.yaml", b"a: " + b"[" * 10_000 + b"]" * 10_000 + b"\n", "levels deep"),
    ("manifest-infinity", "request.yaml", lambda b: b + b"x_extra: .inf\n", "not a finite number"),
    ("manifest-alias-bomb", "request.yaml", b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n", "aliases are not allowed"),
    ("manifest-utf16", "request.yaml", lambda b: b.decode().encode("utf-16"), "UTF-16"),
]:
    both(f"signed-{label}", "files", 15, message, 15, message, _signed(rel, data))


def _link(rel: str, target: str) -> Callable[[Genuine, Path], Path]:
    def make(g: Genuine, w: Path) -> Path:
        d = copy(g, w)
        (d / rel).unlink()
        (d / rel).symlink_to(target)
        return d
    return make


case("predictions-symlink-dev-zero", "files", "dir", 12, "predictions.jsonl: symlink or special file")(_link("predictions.jsonl", "/dev/zero"))
case("metrics-symlink-outside", "files", "dir", 12, "metrics.json: symlink or special file")(_link("metrics.json", "/etc/hostname"))
case("logs-dir-symlink-outside", "files", "dir", 12, "logs: symlink or special file")(
    lambda g, w: (lambda d: (shutil.rmtree(d / "logs"), (d / "logs").symlink_to("/etc"), d)[2])(copy(g, w)))
case("predictions-fifo", "files", "dir", 12, "predictions.jsonl: symlink or special file")(
    lambda g, w: (lambda d: ((d / "predictions.jsonl").unlink(), os.mkfifo(d / "predictions.jsonl"), d)[2])(copy(g, w)))
case("extra-fifo", "files", "dir", 12, "logs/pipe: symlink or special file")(
    lambda g, w: (lambda d: (os.mkfifo(d / "logs" / "pipe"), d)[1])(copy(g, w)))


# 7. Manifests handed to `validate` (an artifact directory).

def _artifact(w: Path, data: bytes | None = None) -> Path:
    a = w / "artifact"
    a.mkdir()
    if data is not None:
        (a / "request.yaml").write_bytes(data)
    return a


MANIFEST = Path(__file__).resolve().parents[1] / "data" / "manifest-valid" / "request.yaml"

for label, make, message in [
    ("symlink-dev-zero", lambda a: (a / "request.yaml").symlink_to("/dev/zero"), "outside"),
    ("symlink-outside", lambda a: (a / "request.yaml").symlink_to(MANIFEST), "outside"),
    ("symlink-dotdot", lambda a: (a / "request.yaml").symlink_to("../secret.yaml"), "outside"),
    ("fifo", lambda a: os.mkfifo(a / "request.yaml"), "is a FIFO"),
    ("socket-like-dir", lambda a: (a / "request.yaml").mkdir(), "is a directory"),
    ("2MiB", lambda a: (a / "request.yaml").write_bytes(b"# " + b"x" * (2 * MiB) + b"\n"), "over the 1048576-byte limit"),
    ("sparse-4GiB", lambda a: os.truncate((a / "request.yaml").open("wb").name, 4 * GiB), "over the 1048576-byte limit"),
    ("nested-flow", lambda a: (a / "request.yaml").write_bytes(b"a: " + b"[" * 100_000 + b"]" * 100_000), "levels deep"),
    ("nested-block", lambda a: (a / "request.yaml").write_bytes(
        "".join(f"{' ' * i}k{i}:\n" for i in range(200)).encode() + b" " * 200 + b"v: 1\n"), "levels deep"),
    ("utf16", lambda a: (a / "request.yaml").write_bytes(MANIFEST.read_text().encode("utf-16")), "UTF-16"),
    ("bom", lambda a: (a / "request.yaml").write_bytes(b"\xef\xbb\xbf" + MANIFEST.read_bytes()), "byte-order mark"),
    ("infinity", lambda a: (a / "request.yaml").write_bytes(MANIFEST.read_bytes() + b"x: -.inf\n"), "not a finite number"),
    ("nan", lambda a: (a / "request.yaml").write_bytes(MANIFEST.read_bytes() + b"x: .NaN\n"), "not a finite number"),
    ("alias-bomb", lambda a: (a / "request.yaml").write_bytes(b"a: &a [1,1]\nb: [*a,*a]\n"), "aliases are not allowed"),
    ("duplicate-key", lambda a: (a / "request.yaml").write_bytes(MANIFEST.read_bytes() + b"name: again\n"), "duplicate key"),
]:
    def _manifest(g: Genuine, w: Path, make: Callable[[Path], object] = make) -> Path:
        a = _artifact(w)
        (w / "secret.yaml").write_bytes(b"secret: 1\n")
        make(a)
        return a
    case(f"manifest-{label}", "manifest", "manifest", 2, message)(_manifest)
