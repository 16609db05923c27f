"""A generator of hostile inputs archives (``request-pack archive``) and directories of loose files.

Each :class:`Case` builds one hostile ``--from`` source out of a genuine archive
(``GenuineArchive``: tests/data/lock-basic's lock over a filled cache, written once
by ``plan_archive`` and ``write_archive``) and says how ``fetch ARTIFACT --from`` and
the restore steps of ``reproduce BUNDLE --from`` (``restore_artifact``,
``restore_sources``) must refuse it: exit code (16 a hostile or broken archive,
2 not a request-pack archive or not a regular file, 1 bytes that do not match
their pin, or a pinned file the source lacks) and a piece of the one-line message.
Used by ``tests/unit/test_hostile_inputs.py``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _hostile import GiB, MiB, gz, pax_header, raw_header, strip_end

Members = list[tuple[tarfile.TarInfo, bytes | None]]


@dataclass(frozen=True)
class GenuineArchive:
    art: Path  # the artifact directory (manifest and lock) fetch reads
    tar: Path  # its genuine archive
    top: str
    members: tuple[tuple[tarfile.TarInfo, bytes | None], ...]  # as written, in order


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    make: Callable[[GenuineArchive, Path], Path]  # (genuine, empty work dir) -> the --from source
    code: int
    message: str
    ops: tuple[str, ...] = ("fetch", "restore")  # which readers must refuse it ("restore": reproduce's steps 3-4)


CASES: list[Case] = []


def case(name: str, group: str, code: int, message: str, ops: tuple[str, ...] = ("fetch", "restore")):
    def add(make: Callable[[GenuineArchive, Path], Path]) -> Callable[[GenuineArchive, Path], Path]:
        CASES.append(Case(name, group, make, code, message, ops))
        return make
    return add


def read_members(tar: Path) -> tuple[tuple[tarfile.TarInfo, bytes | None], ...]:
    out = []
    with tarfile.open(tar) as t:
        for m in t:
            out.append((m, t.extractfile(m).read() if m.isfile() else None))  # type: ignore[union-attr]
    return tuple(out)


def pack(members: Members, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            info = copy.copy(info)
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write(work: Path, data: bytes, name: str = "inputs.tar") -> Path:
    (work / name).write_bytes(data)
    return work / name


def edited(g: GenuineArchive, *, index: Callable[[dict], None] | None = None,
           members: Callable[[Members], Members] | None = None, raw_index: Callable[[bytes], bytes] | None = None,
           fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """The genuine archive rewritten: its index edited (as JSON or as bytes), its member list edited."""
    out: Members = []
    for info, data in g.members:
        if info.name == f"{g.top}/index.json":
            assert data is not None
            if index:
                doc = json.loads(data)
                index(doc)
                data = json.dumps(doc, indent=2, sort_keys=True).encode()
            if raw_index:
                data = raw_index(data)
        out.append((info, data))
    return pack(members(out) if members else out, fmt)


def add(*extra: tuple[tarfile.TarInfo, bytes | None]) -> Callable[[Members], Members]:
    return lambda ms: ms + list(extra)


def entry(name: str, data: bytes = b"x", **attrs: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    for k, v in attrs.items():
        setattr(info, k, v)
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = 0
        return info, None
    info.size = len(data)
    return info, data


def deb(g: GenuineArchive) -> tuple[str, bytes]:
    """The first .deb member: its name and bytes."""
    info, data = next((i, d) for i, d in g.members if i.name.endswith("_amd64.deb"))
    assert data is not None
    return info.name, data


def indexed(g: GenuineArchive, name: str, data: bytes, what: str = "extra entry") -> Callable[[dict], None]:
    """An index edit adding an entry for a member ``name`` (below the top) with these bytes."""
    def edit(doc: dict) -> None:
        doc["entries"].append({"entry": what, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "path": name})
    return edit


def replace(name: str, data: bytes) -> Callable[[Members], Members]:
    return lambda ms: [(i, data if i.name == name else d) for i, d in ms]


# --- 1. the file and the tar stream ------------------------------------------------------------------

case("gzip-compressed", "stream", 16, "a gzip-compressed file")(lambda g, w: write(w, gz(g.tar.read_bytes()), "inputs.tar.gz"))
case("xz-magic", "stream", 16, "a xz-compressed file")(lambda g, w: write(w, b"\xfd7zXZ\0" + bytes(1000)))
case("bzip2-magic", "stream", 16, "a bzip2-compressed file")(lambda g, w: write(w, b"BZh91AY&SY" + bytes(1000)))
case("empty-file", "stream", 16, "truncated archive")(lambda g, w: write(w, b""))
case("garbage", "stream", 16, "not a valid tar archive")(lambda g, w: write(w, b"not a tar at all " * 100))
case("truncated-in-a-member", "stream", 16, "the file ends first")(
    lambda g, w: write(w, g.tar.read_bytes()[: len(g.tar.read_bytes()) // 2]))
case("truncated-in-a-header", "stream", 16, "truncated archive")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + raw_header(f"{g.top}/x", 1)[:300]))
case("no-end-marker", "stream", 16, "truncated archive")(lambda g, w: write(w, strip_end(g.tar.read_bytes())))
for label, tail in {"garbage": b"PWNED" * 100, "member-after-eof": raw_header("evil.txt", 4) + b"evil".ljust(512, b"\0"),
                    "far-after-eof": bytes(80 << 10) + b"x", "zeros-1MiB": bytes(MiB)}.items():
    case(f"trailing-{label}", "stream", 16, "data after the tar end-of-archive marker")(
        lambda g, w, tail=tail: write(w, g.tar.read_bytes() + tail))
case("bad-header-checksum", "stream", 16, "not a valid tar archive")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + b"\x01" * 512 + bytes(1024)))
case("member-declares-3GiB", "stream", 16, "declares 3221225472 bytes")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + raw_header(f"{g.top}/pypi/big.whl", 3 * GiB) + bytes(4096)))


def _sparse_pax(g: GenuineArchive, w: Path) -> Path:
    """A pax header that really is 300 MiB long (a sparse file: no disk, no time)."""
    p = write(w, raw_header("././@PaxHeader", 300 * MiB, tarfile.XHDTYPE))
    with p.open("r+b") as f:
        f.truncate(512 + 300 * MiB + 1024)
    return p


case("pax-header-300MiB", "headers", 16, "extended header of 314572800 bytes")(_sparse_pax)
case("pax-header-1MiB", "headers", 16, "over the 65536-byte limit")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + pax_header({"comment": "x" * MiB}) + raw_header("a", 0) + bytes(1024)))
case("gnu-longname-1MiB", "headers", 16, "over the 65536-byte limit")(
    lambda g, w: write(w, raw_header("././@LongLink", MiB, tarfile.GNUTYPE_LONGNAME) + b"a" * MiB + bytes(1024)))
case("pax-sets-size", "headers", 16, "pax header sets 'size'")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + pax_header({"size": str(9 * GiB)}) + raw_header("a", 0) + bytes(1024)))
case("pax-gnu-sparse", "headers", 16, "GNU.sparse")(
    lambda g, w: write(w, pax_header({"GNU.sparse.major": "1"}) + raw_header("a", 0) + bytes(1024)))
case("global-pax-path", "headers", 16, "pax header sets 'path'")(
    lambda g, w: write(w, pax_header({"path": "../evil"}, tarfile.XGLTYPE) + g.tar.read_bytes()))
case("pax-path-traversal", "headers", 16, "'..' component")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + pax_header({"path": f"{g.top}/../../evil"}) + raw_header("a", 1)
                       + b"x".ljust(512, b"\0") + bytes(1024)))
case("pax-malformed-record", "headers", 16, "malformed pax extended header")(
    lambda g, w: write(w, raw_header("././@PaxHeader", 12, tarfile.XHDTYPE) + b"99 path=a\n\0\0".ljust(512, b"\0")
                       + raw_header("a", 0) + bytes(1024)))
case("extended-header-then-end", "headers", 16, "an extended header with no member")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + pax_header({"path": "a"}) + bytes(1024)))
def with_checksum(h: bytes) -> bytes:
    """A tar header with its checksum field recomputed (so the parser reads the rest)."""
    h = h[:148] + b" " * 8 + h[156:]
    return h[:148] + b"%06o\0 " % sum(h) + h[156:]


case("negative-size", "headers", 16, "declares a negative size")(
    lambda g, w: write(w, strip_end(g.tar.read_bytes()) + with_checksum((lambda h: h[:124] + b"\xff" * 12 + h[136:])(
        raw_header(f"{g.top}/a", 0))) + bytes(1024)))
case("9000-tiny-members", "headers", 16, "more than 8192 members")(
    lambda g, w: write(w, b"".join(raw_header(f"{g.top}/d/{i}", 0) for i in range(9000)) + bytes(1024)))
case("9000-pax-headers", "headers", 16, "more than 8192 extended headers")(
    lambda g, w: write(w, b"".join(pax_header({"comment": str(i)}) for i in range(9000)) + raw_header("a", 0) + bytes(1024)))

# --- 2. members: regular files and directories only, safe unique names -------------------------------

for label, kind, extra in [("symlink-out", "symlink to '/etc/passwd'", dict(type=tarfile.SYMTYPE, linkname="/etc/passwd")),
                           ("symlink-in", "symlink to 'index.json'", dict(type=tarfile.SYMTYPE, linkname="index.json")),
                           ("hardlink", "hard link to '/etc/shadow'", dict(type=tarfile.LNKTYPE, linkname="/etc/shadow")),
                           ("char-device", "device file", dict(type=tarfile.CHRTYPE, devmajor=1, devminor=5)),
                           ("block-device", "device file", dict(type=tarfile.BLKTYPE, devmajor=8, devminor=0)),
                           ("fifo", "FIFO", dict(type=tarfile.FIFOTYPE)),
                           ("gnu-sparse", "sparse file", dict(type=tarfile.GNUTYPE_SPARSE)),
                           ("contiguous", "unsupported type", dict(type=tarfile.CONTTYPE))]:
    case(f"member-{label}", "members", 16, kind)(
        lambda g, w, extra=extra: write(w, edited(g, members=add(entry(f"{g.top}/artifact/extra", **extra)))))

for label, name, message in [("absolute", "/etc/cron.d/evil", "absolute"),
                             ("dot-dot", "../../evil", "'..' component"),
                             ("dot-dot-inside", "{top}/artifact/../../../evil", "'..' component"),
                             ("backslash", "{top}\\..\\evil", "backslash"),
                             ("nul-free-control", "{top}/artifact/a\nb", "control character"),
                             ("nfd", "{top}/artifact/cafe\u0301", "not in Unicode NFC form"),
                             ("long-component", "{top}/" + "c" * 300, "over the 255-byte limit"),
                             ("long-path", "{top}/" + "/".join(["p" * 200] * 6), "over the 1024-byte path limit"),
                             ("deep-path", "{top}/" + "/".join(["d"] * 40), "levels deep"),
                             ("root-dot", "./", "names the archive root")]:
    case(f"name-{label}", "names", 16, message)(
        lambda g, w, name=name: write(w, edited(g, members=add(entry(name.format(top=g.top)))), "inputs.tar"))


def _duplicate(g: GenuineArchive, w: Path) -> Path:
    name, data = deb(g)
    return write(w, edited(g, members=add(entry(name, b"evil" + data[4:]))))


case("duplicate-member", "names", 16, "appears twice")(_duplicate)
case("duplicate-index", "names", 16, "appears twice")(
    lambda g, w: write(w, edited(g, members=add(entry(f"{g.top}/index.json", b"{}")))))
case("dot-slash-duplicate", "names", 16, "appears twice")(
    lambda g, w: write(w, edited(g, members=add(entry(f"./{deb(g)[0]}", deb(g)[1])))))
case("second-top-directory", "names", 2, "not a request-pack archive")(
    lambda g, w: write(w, edited(g, members=add(entry("other/evil.deb")))))
case("no-index", "names", 2, "not a request-pack archive")(
    lambda g, w: write(w, pack([(i, d) for i, d in g.members if not i.name.endswith("/index.json")])))
case("index-is-a-directory", "names", 16, "index.json: a directory")(
    lambda g, w: write(w, pack([(i, d) if not i.name.endswith("/index.json") else entry(i.name, type=tarfile.DIRTYPE)
                                for i, d in g.members])))


def _collide(g: GenuineArchive, w: Path) -> Path:
    data = b"other manifest\n"
    return write(w, edited(g, index=indexed(g, "artifact/REQUEST.yaml", data, "composed from X"),
                           members=add(entry(f"{g.top}/artifact/REQUEST.yaml", data))))


# Harmless to fetch (nothing is written by name), refused where files are written by name.
case("restored-names-collide", "names", 16, "collide after Unicode normalisation or case folding", ("restore",))(_collide)

# --- 3. index.json: strict JSON under its cap, its schema, and no lies about the headers ------------

for label, raw, message in [
    ("not-json", lambda b: b[:50], "not valid JSON"),
    ("utf16", lambda b: b.decode().encode("utf-16"), "UTF-16"),
    ("bom", lambda b: b"\xef\xbb\xbf" + b, "byte-order mark"),
    ("nested", lambda b: b"[" * 100_000 + b"]" * 100_000, "levels deep"),
    ("nested-in-field", lambda b: b.rstrip()[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "levels deep"),
    ("nan", lambda b: b.rstrip()[:-1] + b', "x": NaN}', "NaN is not a finite number"),
    ("1e999", lambda b: b.rstrip()[:-1] + b', "x": 1e999}', "overflows to infinity"),
    ("huge-int", lambda b: b.rstrip()[:-1] + b', "x": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
    ("duplicate-key", lambda b: b.rstrip()[:-1] + b', "entries": []}', "duplicate key 'entries'"),
    ("17MiB", lambda b: b.rstrip()[:-1] + b', "x": "' + b"y" * (17 * MiB) + b'"}', "over the 16777216-byte limit"),
]:
    case(f"index-{label}", "index", 16, message)(lambda g, w, raw=raw: write(w, edited(g, raw_index=raw)))

case("index-key-1MiB", "index", 16, "Extra inputs are not permitted")(
    lambda g, w: write(w, edited(g, index=lambda d: d.update({"k" * MiB: 1}))))
case("index-version-a-1MiB-string", "index", 2, "is not 1")(
    lambda g, w: write(w, edited(g, index=lambda d: d.update(archive_version="v" * MiB))))
case("member-symlink-60KiB-target", "members", 16, "symlink to")(
    lambda g, w: write(w, edited(g, members=add(entry(f"{g.top}/artifact/l", type=tarfile.SYMTYPE, linkname="/" + "l" * 60_000)))))
case("member-60KiB-name", "names", 16, "over the 1024-byte path limit")(
    lambda g, w: write(w, edited(g, members=add(entry(f"{g.top}/" + "/".join(["n" * 250] * 240))))))
case("index-not-an-object", "index", 2, "archive_version 'list' is not 1")(lambda g, w: write(w, edited(g, raw_index=lambda b: b"[]")))
case("index-version-2", "index", 2, "archive_version 2 is not 1")(
    lambda g, w: write(w, edited(g, index=lambda d: d.update(archive_version=2))))


def _entry0(change: dict) -> Callable[[dict], None]:
    return lambda d: d["entries"][0].update(change)


for label, edit, message in [
    ("entries-not-a-list", lambda d: d.update(entries={"a": 1}), "entries: Input should be a valid list"),
    ("entries-of-strings", lambda d: d.update(entries=["x"] * 3), "entries.0: Input should be"),
    ("size-a-string", _entry0({"size": "12 bytes"}), "entries.0.size"),
    ("size-negative", _entry0({"size": -1}), "entries.0.size"),
    ("size-float", _entry0({"size": 1.5}), "entries.0.size"),
    ("sha256-not-hex", _entry0({"sha256": "z" * 64}), "entries.0.sha256"),
    ("sha256-uppercase", _entry0({"sha256": "A" * 64}), "entries.0.sha256"),
    ("path-an-int", _entry0({"path": 7}), "entries.0.path"),
    ("mode-setuid-and-more", _entry0({"mode": 0o104755}), "entries.0.mode"),
    ("unknown-key", _entry0({"url": "http://evil"}), "entries.0.url: Extra inputs are not permitted"),
    ("lock-sha-missing", lambda d: d.pop("lock_sha256"), "lock_sha256: Field required"),
    ("platforms-huge", lambda d: d.update(platforms=["x"] * 100_000), "platforms"),
    ("path-dot-dot", _entry0({"path": "../../../etc/passwd"}), "'..' component"),
    ("path-absolute", _entry0({"path": "/etc/passwd"}), "absolute"),
    ("path-unnormalised", _entry0({"path": "artifact/./request.yaml"}), "which is not a regular member"),
    ("path-names-a-directory", _entry0({"path": "artifact"}), "which is not a regular member"),
    ("size-lies", lambda d: d["entries"][0].update(size=d["entries"][0]["size"] + 1), "bytes, member"),
    ("artifact-not-the-top", lambda d: d.update(artifact="other"), "the archive's top directory is"),
    ("two-shas-for-one-path", lambda d: d["entries"].append({**d["entries"][0], "entry": "again", "sha256": "0" * 64}),
     "different sha256s"),
    ("entry-removed-member-stays", lambda d: d["entries"].pop(0), "is in no entry"),
]:
    case(f"index-{label}", "index", 16, message)(lambda g, w, edit=edit: write(w, edited(g, index=edit)))

case("member-not-in-index", "index", 16, "is in no entry")(
    lambda g, w: write(w, edited(g, members=add(entry(f"{g.top}/pypi/unlisted.whl", b"PK evil")))))

# --- 4. bytes that do not match their pin: refused when read, naming the entry -----------------------


def _tamper(pick: Callable[[tarfile.TarInfo], bool]) -> Callable[[GenuineArchive, Path], Path]:
    def make(g: GenuineArchive, w: Path) -> Path:
        info, data = next((i, d) for i, d in g.members if pick(i))
        assert data
        return write(w, edited(g, members=replace(info.name, bytes([data[0] ^ 1]) + data[1:])))
    return make


case("tampered-deb", "tampered", 1, "sha256 mismatch", ("fetch",))(_tamper(lambda i: i.name.endswith("python3_1.0+b1_amd64.deb")))
case("tampered-wheel", "tampered", 1, "sha256 mismatch", ("fetch",))(_tamper(lambda i: i.name.endswith(".whl")))
case("tampered-model", "tampered", 1, "sha256 mismatch", ("fetch",))(_tamper(lambda i: i.name.endswith("model.onnx")
                                                                             and "/artifact/" not in i.name))
case("tampered-harness-source", "tampered", 1, "sha256 mismatch", ("restore",))(
    _tamper(lambda i: i.name.endswith("request-pack/packager/harness/__main__.py")))
case("tampered-manifest", "tampered", 1, "sha256 mismatch", ("restore",))(_tamper(lambda i: i.name.endswith("artifact/request.yaml")))


def _lying_lock(g: GenuineArchive, w: Path) -> Path:
    """The lock replaced and its index entry re-hashed to match: the index's own lock_sha256 still disagrees."""
    name = f"{g.top}/artifact/request.lock"
    data = next(d for i, d in g.members if i.name == name)
    assert data
    evil = data.replace(b'"lock_version": 1', b'"lock_version": 1 ')

    def edit(d: dict) -> None:
        e = next(e for e in d["entries"] if e["path"] == "artifact/request.lock")
        e.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
    return write(w, edited(g, index=edit, members=replace(name, evil)))


case("lock-rehashed-in-the-index", "tampered", 1, "artifact/request.lock: sha256 mismatch", ("restore",))(_lying_lock)


def _sha_points_elsewhere(g: GenuineArchive, w: Path) -> Path:
    """An entry's sha256 names a wanted object, its path another member of the same size: the bytes tell."""
    def edit(d: dict) -> None:
        debs = [e for e in d["entries"] if e["path"].endswith(".deb")]
        a, b = next((a, b) for a in debs for b in debs if a["size"] == b["size"] and a["sha256"] != b["sha256"])
        a["path"], b["path"] = b["path"], a["path"]
    return write(w, edited(g, index=edit))


case("index-swaps-two-paths", "tampered", 1, "sha256 mismatch", ("fetch",))(_sha_points_elsewhere)
case("index-drops-a-wanted-entry-and-its-member", "tampered", 1, "nothing else is contacted", ("fetch",))(
    lambda g, w: write(w, edited(g, index=lambda d: d.update(entries=[e for e in d["entries"] if not e["path"].endswith("_armhf.deb")]),
                                 members=lambda ms: [(i, x) for i, x in ms if not i.name.endswith("_armhf.deb")])))

# --- 5. a directory of loose files, and --from that is not a regular file ----------------------------


def _loose(g: GenuineArchive, w: Path) -> Path:
    d = w / "loose"
    d.mkdir()
    for info, data in g.members:
        if data is not None and not info.name.endswith("/index.json"):
            (d / f"{len(list(d.iterdir()))}-{info.name.rsplit('/', 1)[-1]}").write_bytes(data)
    return d


def _loose_but(change: Callable[[Path, bytes], object]) -> Callable[[GenuineArchive, Path], Path]:
    """The loose files with every .deb replaced by ``change``'s symlink or special file (then those are missing)."""
    def make(g: GenuineArchive, w: Path) -> Path:
        d = _loose(g, w)
        for p in sorted(d.glob("*.deb")):
            data = p.read_bytes()
            p.unlink()
            change(p, data)
        return d
    return make


def _outside(p: Path, data: bytes) -> None:
    """A symlink to the genuine file, kept outside the directory handed over (work/outside): never followed."""
    out = p.parent.parent / "outside"
    out.mkdir(exist_ok=True)
    (out / p.name).write_bytes(data)
    p.symlink_to(out / p.name)


def _sparse_file(p: Path, size: int) -> None:
    with p.open("wb") as f:
        f.truncate(size)


def _many(d: Path, n: int) -> Path:
    (d / "many").mkdir()
    for i in range(n):
        (d / "many" / str(i)).touch()
    return d


for label, change in [("symlink-dev-zero", lambda p, _: p.symlink_to("/dev/zero")),
                      ("symlink-dev-urandom", lambda p, _: p.symlink_to("/dev/urandom")),
                      ("fifo", lambda p, _: os.mkfifo(p)),
                      ("symlink-outside", _outside),
                      ("symlink-dir-loop", lambda p, _: p.symlink_to(p.parent)),
                      ("sparse-100GiB", lambda p, _: _sparse_file(p, 100 * GiB)),
                      ("sparse-3GiB", lambda p, _: _sparse_file(p, 3 * GiB)),
                      ("socket-like-directory", lambda p, _: p.mkdir())]:
    case(f"dir-debs-{label}", "loose", 1, "nothing else is contacted", ("fetch",))(_loose_but(change))


def _tampered_loose(g: GenuineArchive, w: Path) -> Path:
    d = _loose(g, w)
    for p in d.glob("*.deb"):
        p.write_bytes(b"evil" + p.read_bytes()[4:])
    return d


case("dir-debs-tampered", "loose", 1, "nothing else is contacted", ("fetch",))(_tampered_loose)
case("dir-17000-entries", "loose", 2, "more than 16384 entries", ("fetch",))(lambda g, w: _many(_loose(g, w), 17_000))
case("from-fifo", "loose", 2, "is a FIFO", ("fetch",))(lambda g, w: (os.mkfifo(w / "inputs.tar"), w / "inputs.tar")[1])
case("from-symlink-dev-zero", "loose", 2, "is a symlink", ("fetch",))(
    lambda g, w: ((w / "inputs.tar").symlink_to("/dev/zero"), w / "inputs.tar")[1])
case("from-char-device", "loose", 2, "only regular files are read", ("fetch",))(lambda g, w: Path("/dev/null"))
