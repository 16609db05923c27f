"""Our tar writer (packager/image/writer/oci.write_tar) writes exactly GNU tar's bytes.

GNU tar (the machine's; Debian bookworm ships 1.34, the version the Nix builder unpacks
from the locked .debs) archives a real tree on disk with ``oci.GNU_TAR_OPTIONS``; our
writer gets the same tree as entries (from lstat) in ``normalise`` order. Every entry
kind a layer can hold is there: directories, plain, executable and setuid files, empty
and block-sized files, short and long (> 100 byte) symlink targets, hard links (one with
a long name), long, exactly-100-byte and non-ASCII names, a FIFO, a character device and
a non-root owner (the last two as root only: mknod and chown need it). And one real
layer: the image's harness layer, staged as the Nix builder stages it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from packager.image.plan import harness_files
from packager.image.writer import oci
from packager.image.writer.layers import tree_entries

EPOCH = 1_700_000_000


def _gnu_tar(tree: Path, names: list[str], out: Path, *extra: str) -> bytes:
    tar = shutil.which("tar")
    assert tar is not None and "GNU tar" in subprocess.run([tar, "--version"], capture_output=True, text=True).stdout
    subprocess.run([tar, "--create", f"--file={out}", f"--directory={tree}", "--no-recursion", "--null",
                    "--files-from=-", f"--mtime=@{EPOCH}", "--clamp-mtime", *oci.GNU_TAR_OPTIONS, *extra],
                   input=b"".join(n.encode() + b"\0" for n in names), check=True)
    return out.read_bytes()


def _entries_of(tree: Path) -> list[oci.Entry]:
    """The tree as our writer's entries: what lstat says, hard links aimed at the first path of their inode."""
    paths = sorted((p.relative_to(tree).as_posix() for p in tree.rglob("*")), key=lambda p: p.split("/"))
    first_of: dict[tuple[int, int], str] = {}
    out = []
    for rel in paths:
        st = os.lstat(tree / rel)
        common = dict(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime=min(int(st.st_mtime), EPOCH))
        if stat.S_ISDIR(st.st_mode):
            out.append(oci.Entry(rel, "dir", **common))
        elif stat.S_ISLNK(st.st_mode):
            out.append(oci.Entry(rel, "symlink", linkname=os.readlink(tree / rel), **common))
        elif stat.S_ISFIFO(st.st_mode):
            out.append(oci.Entry(rel, "fifo", **common))
        elif stat.S_ISCHR(st.st_mode):
            out.append(oci.Entry(rel, "char", devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev), **common))
        elif (st.st_dev, st.st_ino) in first_of:
            out.append(oci.Entry(rel, "hardlink", linkname=first_of[(st.st_dev, st.st_ino)], **common))
        else:
            first_of[(st.st_dev, st.st_ino)] = rel
            out.append(oci.Entry(rel, "file", size=st.st_size, open=lambda p=tree / rel: open(p, "rb"), **common))
    return oci.normalise(out, EPOCH)


def _ours(entries: list[oci.Entry]) -> bytes:
    buf = io.BytesIO()
    oci.write_tar(entries, buf, mtime_option=EPOCH)
    return buf.getvalue()


def _first_difference(a: bytes, b: bytes) -> str:
    for i in range(0, max(len(a), len(b)), 512):
        if a[i:i + 512] != b[i:i + 512]:
            at = next((j for j in range(512) if a[i + j:i + j + 1] != b[i + j:i + j + 1]), 0)
            return f"block {i // 512}, byte {at}: ours {a[i:i + 100]!r}… vs GNU {b[i:i + 100]!r}…"
    return "none"


def test_every_entry_kind_is_written_as_gnu_tar_writes_it(tmp_path: Path) -> None:
    t = tmp_path / "tree"
    long_dir = t / ("a" * 60) / ("b" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / "file").write_bytes(b"deep\n")
    (t / "plain.txt").write_bytes(b"hello\n")
    (t / "empty").write_bytes(b"")
    (t / "block").write_bytes(b"x" * 512)
    (t / "run.sh").write_bytes(b"#!/bin/sh\n")
    (t / "run.sh").chmod(0o755)
    (t / "setuid").write_bytes(b"s")
    (t / "setuid").chmod(0o4755)
    (t / ("n" * 100)).write_bytes(b"exactly 100\n")
    (t / ("m" * 101)).write_bytes(b"101\n")
    (t / "café.txt").write_bytes("é\n".encode())
    (t / "link").symlink_to("plain.txt")
    (t / "longlink").symlink_to("/" + "t" * 120)
    os.link(t / "plain.txt", t / "zz-hard")
    os.link(t / "plain.txt", t / ("h" * 110))
    os.mkfifo(t / "fifo")
    if os.geteuid() == 0:
        os.mknod(t / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chown(t / "plain.txt", 1000, 42)
    os.utime(t / "empty", (EPOCH - 86400, EPOCH - 86400))  # older than the epoch: kept, not clamped
    # old and with a name ustar cannot hold: GNU tar dates its extended header with --mtime, not the file's time
    (t / ("o" * 120)).write_bytes(b"old, long\n")
    os.utime(t / ("o" * 120), (EPOCH - 86400, EPOCH - 86400))
    (t / "ancien-été").write_bytes(b"old, not ASCII\n")
    os.utime(t / "ancien-été", (EPOCH - 3600, EPOCH - 3600))
    entries = _entries_of(t)
    assert {e.kind for e in entries} >= {"dir", "file", "symlink", "hardlink", "fifo"}
    gnu = _gnu_tar(t, [e.path for e in entries], tmp_path / "gnu.tar")
    ours = _ours(entries)
    assert ours == gnu, _first_difference(ours, gnu)


def test_the_harness_layer_is_byte_for_byte_gnu_tars(tmp_path: Path) -> None:
    files = harness_files()
    entries = oci.normalise(tree_entries([(src, dest) for src, dest in files], epoch=EPOCH), EPOCH)
    stage = tmp_path / "stage"
    for e in entries:  # staged as a builder with only coreutils would: copy, chmod, every mtime at the epoch
        target = stage / e.path
        if e.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            with e.open() as src:  # type: ignore[misc]
                target.write_bytes(src.read())
        target.chmod(e.mode)
    gnu = _gnu_tar(stage, [e.path for e in entries], tmp_path / "gnu.tar", "--owner=0", "--group=0")
    ours = _ours(entries)
    assert hashlib.sha256(ours).hexdigest() == hashlib.sha256(gnu).hexdigest(), _first_difference(ours, gnu)
