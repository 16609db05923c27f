"""Deterministic packing and hostile-archive rejection."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from _bundle_fixture import make_result_dir

from packager.bundle.archive import Limits, pack, safe_unpack, scan_tree
from packager.errors import BadInput, UnsafeArchive


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_result_dir(tmp_path_factory.mktemp("arch") / "result")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_packing_twice_gives_identical_bytes(result: Path, tmp_path: Path) -> None:
    a = pack(result, tmp_path / "a.tar.gz")
    b = pack(result, tmp_path / "b.tar.gz")
    assert a.read_bytes() == b.read_bytes()


def test_packing_ignores_mtimes_owners_and_creation_order(result: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    long_name = "logs/" + "a-rather-long-directory-name/" * 5 + "ünïcode-log-file-name-past-the-100-byte-ustar-limit.txt"
    base = tmp_path / "base"
    shutil.copytree(result, base)
    (base / long_name).parent.mkdir(parents=True)
    (base / long_name).write_text("long names need PAX records; they must not carry times\n")
    result = base
    copy = tmp_path / "copy"
    copy.mkdir()
    # Create the files in reverse order, with other mtimes and modes, under another directory name.
    for rel, p in reversed(list(scan_tree(result).files.items())):
        dest = copy / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
        os.utime(dest, (time.time() - 1000, time.time() - 1000))
        dest.chmod(0o600)
    a = pack(result, tmp_path / "a.tar.gz")
    b = pack(copy, tmp_path / "b.tar.gz")
    assert _sha(a) == _sha(b)
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    with gzip.open(a) as g:
        g.read(1)
    raw = a.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip MTIME field
    assert raw[3] & 0x08 == 0  # no FNAME flag


def test_source_date_epoch_sets_every_mtime(result: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = pack(result, tmp_path / "a.tar.gz")
    with tarfile.open(a) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(BadInput, match="SOURCE_DATE_EPOCH"):
        pack(result, tmp_path / "b.tar.gz")


def test_round_trip(result: Path, tmp_path: Path) -> None:
    a = pack(result, tmp_path / "a.tar.gz")
    out = safe_unpack(a, tmp_path / "out")
    src, got = scan_tree(result), scan_tree(out)
    assert list(src.files) == list(got.files)
    assert all(_sha(src.files[k]) == _sha(got.files[k]) for k in src.files)


def test_pack_refuses_symlinks(result: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(result, copy)
    (copy / "link").symlink_to("/etc/passwd")
    with pytest.raises(BadInput, match="symlink"):
        pack(copy, tmp_path / "a.tar.gz")


# --- hostile archives -----------------------------------------------------------------


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


def _pax_tar(name: str, pax: dict[str, str]) -> bytes:
    # A PAX extended header silently replaces the name the ustar header shows.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        info.pax_headers = pax
        tar.addfile(info, io.BytesIO(b"x"))
    return gzip.compress(buf.getvalue(), mtime=0)


def _oversized() -> bytes:
    info, _ = _file("metrics.json", b"")
    info.size = 4096
    return _tar([(info, b"\0" * 4096)])


HOSTILE = {
    "absolute-path": (lambda: _tar([_file("/tmp/evil")]), "absolute path"),
    "dot-dot": (lambda: _tar([_file("logs/../../evil")]), "'..' path component"),
    "symlink": (lambda: _tar([_special("metrics.json", tarfile.SYMTYPE, "/etc/passwd")]), "symlink to '/etc/passwd' not allowed"),
    "hardlink": (lambda: _tar([_file("a"), _special("b", tarfile.LNKTYPE, "a")]), "hard link to 'a' not allowed"),
    "char-device": (lambda: _tar([_special("null", tarfile.CHRTYPE)]), "device file not allowed"),
    "block-device": (lambda: _tar([_special("sda", tarfile.BLKTYPE)]), "device file not allowed"),
    "fifo": (lambda: _tar([_special("pipe", tarfile.FIFOTYPE)]), "FIFO not allowed"),
    "oversized-entry": (_oversized, "4096 bytes exceeds the 1024 byte limit"),
    "duplicate-entry": (lambda: _tar([_file("a"), _file("a")]), "duplicate entry"),
    "file-then-dir-through-it": (lambda: _tar([_file("a"), _file("a/b")]), "passes through a non-directory"),
    "pax-path-override": (lambda: _pax_tar("harmless", {"path": "../../etc/cron.d/evil"}), "'..' path component"),
    "pax-absolute-path": (lambda: _pax_tar("harmless", {"path": "/etc/evil"}), "absolute path"),
    "not-gzip": (lambda: b"PK\x03\x04 this is a zip", "not a gzip file"),
    "empty-file": (lambda: b"", "not a gzip file"),
    "gzip-of-garbage": (lambda: gzip.compress(b"hello, not a tar" * 100), "not a valid tar archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_rejected(case: str, tmp_path: Path) -> None:
    make, message = HOSTILE[case]
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(make())
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchive) as info:
        safe_unpack(archive, target, Limits(max_entry_bytes=1024))
    assert message in str(info.value)
    assert info.value.return_code == 16
    # nothing escaped the target directory
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_truncated_gzip_is_a_clear_error(result: Path, tmp_path: Path) -> None:
    good = pack(result, tmp_path / "good.tar.gz").read_bytes()
    for cut in (10, len(good) // 2, len(good) - 4):
        archive = tmp_path / f"cut{cut}.tar.gz"
        archive.write_bytes(good[:cut])
        with pytest.raises(UnsafeArchive, match="truncated"):
            safe_unpack(archive, tmp_path / f"out{cut}")


def test_total_size_limit(result: Path, tmp_path: Path) -> None:
    archive = pack(result, tmp_path / "a.tar.gz")
    with pytest.raises(UnsafeArchive, match="bytes unpacked"):
        safe_unpack(archive, tmp_path / "out", Limits(max_total_bytes=1000))


def test_unpack_refuses_a_nonempty_target(result: Path, tmp_path: Path) -> None:
    archive = pack(result, tmp_path / "a.tar.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    with pytest.raises(BadInput, match="not empty"):
        safe_unpack(archive, tmp_path / "out")


def test_archive_made_by_gnu_tar_unpacks(result: Path, tmp_path: Path) -> None:
    # Bundles packed by hand with `tar -C DIR -czf X .` start with a "./" entry.
    import subprocess

    archive = tmp_path / "gnu.tar.gz"
    subprocess.run(["tar", "-C", str(result), "-czf", str(archive), "."], check=True)
    out = safe_unpack(archive, tmp_path / "out")
    assert list(scan_tree(out).files) == list(scan_tree(result).files)


def test_sign_refuses_an_archive_inside_the_result_dir(result: Path, tmp_path: Path) -> None:
    from packager.bundle.sign import sign_result_dir

    with pytest.raises(BadInput, match="inside the directory it packs"):
        sign_result_dir(result, tmp_path / "unused.key", archive_path=result / "bundle.tar.gz")
