"""What goes into each layer, as ``oci.Entry`` streams: a root filesystem tar, wheels, trees, files.

Standard library only, like ``oci``, so the Nix builder can run it too.

Installing a wheel is unpacking it (PEP 427): ``purelib``/``platlib`` go to
site-packages, ``scripts`` to ``bin`` with the interpreter filled in, ``data``
under the prefix; the ``.dist-info`` gets ``INSTALLER`` and a RECORD that
lists the installed paths. Doing it here instead of running pip in the image
keeps the layer free of pip's caches and timestamps, and needs no emulation:
the wheel's bytes are the same on every architecture. Written by hand rather
than with ``installer`` because this module runs stdlib-only in the Nix sandbox.

Where wheels go (site-packages, the headers' include directory) depends on the
image's Python, which ``platforms.BaseSystem`` names; this module cannot import
it, so the plan's wheels layer spec carries both paths as data.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import tarfile
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from .oci import KIND_OF_TAR_TYPE, Entry, clean_path, parent_dirs

PREFIX = "usr/local"
INTERPRETER = "/usr/bin/python3"
INSTALLER = b"request-pack\n"

# Things a container runtime provides or that leak the build host; never ship them.
_DROP_EXACT = {"etc/hostname", "etc/resolv.conf", "etc/machine-id", "var/lib/dbus/machine-id"}
_DROP_UNDER = ("dev/", "proc/", "sys/", "run/", "tmp/", "var/tmp/", "var/log/", "var/cache/apt/",
               "var/lib/apt/lists/")
_KEEP_EMPTY_DIRS = {"dev", "proc", "sys", "run", "tmp", "var/tmp", "var/log", "var/cache/apt", "var/lib/apt/lists"}


def _dropped(path: str) -> bool:
    if path in _DROP_EXACT or path.endswith("-old") and path.startswith(("var/lib/dpkg/", "var/cache/debconf/", "etc/")):
        return True
    if "/__pycache__/" in path + "/" and path.endswith((".pyc", "__pycache__")):
        return True
    return any(path.startswith(p) for p in _DROP_UNDER)


def rootfs_entries(tar: tarfile.TarFile) -> Iterator[Entry]:
    """Entries of an (uncompressed, seekable) root filesystem tar, minus host leftovers and caches."""
    for m in tar.getmembers():
        path = clean_path(m.name)
        if not path or (_dropped(path) and path not in _KEEP_EMPTY_DIRS):
            continue
        kind = KIND_OF_TAR_TYPE.get(m.type)
        if kind is None:
            raise ValueError(f"{m.name}: unsupported tar member type {m.type!r}")
        mode = m.mode
        if path in ("tmp", "var/tmp"):
            mode = 0o1777
        yield Entry(
            path=path, kind=kind, mode=mode, uid=m.uid, gid=m.gid, mtime=int(m.mtime),
            size=m.size if kind == "file" else 0, linkname=m.linkname, devmajor=m.devmajor, devminor=m.devminor,
            open=(lambda m=m: tar.extractfile(m)) if kind == "file" else None,  # type: ignore[misc]
        )


def file_entry(source: Path, dest: str, *, mode: int = 0o644, epoch: int) -> Entry:
    source = Path(source)
    return Entry(clean_path(dest), "file", mode=mode, mtime=epoch, size=source.stat().st_size,
                 open=lambda: open(source, "rb"))


def bytes_entry(data: bytes, dest: str, *, mode: int = 0o644, epoch: int) -> Entry:
    return Entry(clean_path(dest), "file", mode=mode, mtime=epoch, size=len(data), open=lambda: io.BytesIO(data))


def tree_entries(files: Iterable[tuple[Path, str]], *, epoch: int) -> list[Entry]:
    """Regular files (source, destination) plus their parent directories; modes 0644/0755 only."""
    out = []
    for src, dest in files:
        mode = 0o755 if Path(src).stat().st_mode & 0o111 else 0o644
        out.append(file_entry(src, dest, mode=mode, epoch=epoch))
    return parent_dirs([e.path for e in out], mtime=epoch) + out


# --- wheels -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstalledWheel:
    name: str
    version: str
    files: int


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class Scheme:
    """Where an image's Python finds installed wheels, relative to the image root."""

    site_packages: str  # e.g. usr/local/lib/python3.11/dist-packages
    include: str  # e.g. usr/local/include/python3.11

    def relative(self, path: str) -> str:
        """``path`` as RECORD writes it: relative to site-packages."""
        p, site = PurePosixPath(path), PurePosixPath(self.site_packages)
        try:
            return str(p.relative_to(site))
        except ValueError:
            up = len(site.parts) - len(PurePosixPath(PREFIX).parts)
            return "../" * up + str(p.relative_to(PREFIX))


def _wheel_target(member: str, data_dir: str, dist_name: str, scheme: Scheme) -> str | None:
    """Installed path (relative to the layer root) of a wheel member, or None to skip it."""
    if member.endswith("/"):
        return None
    if member.startswith(data_dir + "/"):
        rest = member[len(data_dir) + 1:]
        key, _, sub = rest.partition("/")
        if key in ("purelib", "platlib"):
            return f"{scheme.site_packages}/{sub}"
        if key == "scripts":
            return f"{PREFIX}/bin/{sub}"
        if key == "data":
            return f"{PREFIX}/{sub}"
        if key == "headers":
            return f"{scheme.include}/{dist_name}/{sub}"
        raise ValueError(f"unknown wheel data scheme {key!r} in {member}")
    return f"{scheme.site_packages}/{member}"


_SCRIPT_SHEBANG = re.compile(rb"^#!python(w)?[^\r\n]*")


def _console_scripts(entry_points: str) -> list[tuple[str, str, str]]:
    out, section = [], None
    for line in entry_points.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]").strip()
            continue
        if section == "console_scripts" and "=" in line:
            name, _, target = (x.strip() for x in line.partition("="))
            module, _, func = target.partition(":")
            out.append((name, module.strip(), func.split("[")[0].strip()))
    return sorted(out)


_LAUNCHER = """#!{python}
import sys
from {module} import {head}
if __name__ == "__main__":
    sys.exit({func}())
"""


def wheel_entries(wheels: Iterable[tuple[Path, str]], stack: ExitStack, *, epoch: int,
                  scheme: Scheme) -> tuple[list[Entry], list[InstalledWheel]]:
    """Entries of all wheels ``(path, wheel file name)`` installed into /usr/local, sorted later by ``oci.normalise``."""
    entries: list[Entry] = []
    installed: list[InstalledWheel] = []
    owner: dict[str, str] = {}
    for path, wheel in sorted(wheels, key=lambda w: w[1]):
        zf = stack.enter_context(zipfile.ZipFile(path))
        dist_name, version = wheel.split("-")[:2]
        infos = [i for i in zf.infolist() if not i.is_dir()]
        dist_info = next((n.filename.split("/")[0] for n in infos if re.fullmatch(r"[^/]+\.dist-info/WHEEL", n.filename)), None)
        if dist_info is None:
            raise ValueError(f"{wheel}: no .dist-info/WHEEL inside")
        data_dir = dist_info[: -len(".dist-info")] + ".data"
        record_rows: list[tuple[str, str, str]] = []
        for info in sorted(infos, key=lambda i: i.filename):
            member = info.filename
            if member in (f"{dist_info}/RECORD", f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s", f"{dist_info}/INSTALLER"):
                continue
            target = _wheel_target(member, data_dir, dist_name, scheme)
            if target is None:
                continue
            target = clean_path(target)
            data = zf.read(info)
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            if member.startswith(data_dir + "/scripts/"):
                data, n = _SCRIPT_SHEBANG.subn(b"#!" + INTERPRETER.encode(), data, count=1)
                mode = 0o755
            if target in owner:
                raise ValueError(f"{target} is in both {owner[target]} and {wheel}")
            owner[target] = wheel
            entries.append(_bytes(data, target, mode, epoch))
            record_rows.append((scheme.relative(target), _record_hash(data), str(len(data))))
        if f"{dist_info}/entry_points.txt" in zf.namelist():
            text = zf.read(f"{dist_info}/entry_points.txt").decode("utf-8")
            for name, module, func in _console_scripts(text):
                script = _LAUNCHER.format(python=INTERPRETER, module=module, head=func.split(".")[0], func=func).encode()
                target = f"{PREFIX}/bin/{name}"
                entries.append(_bytes(script, target, 0o755, epoch))
                record_rows.append((scheme.relative(target), _record_hash(script), str(len(script))))
        installer_path = f"{scheme.site_packages}/{dist_info}/INSTALLER"
        entries.append(_bytes(INSTALLER, installer_path, 0o644, epoch))
        record_rows.append((scheme.relative(installer_path), _record_hash(INSTALLER), str(len(INSTALLER))))
        record_path = f"{scheme.site_packages}/{dist_info}/RECORD"
        record_rows.append((scheme.relative(record_path), "", ""))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for row in sorted(record_rows):
            writer.writerow(row)
        entries.append(_bytes(buf.getvalue().encode(), record_path, 0o644, epoch))
        installed.append(InstalledWheel(dist_name, version, len(record_rows)))
    return parent_dirs([e.path for e in entries], mtime=epoch) + entries, installed


def _bytes(data: bytes, path: str, mode: int, epoch: int) -> Entry:
    return Entry(path, "file", mode=mode, mtime=epoch, size=len(data), open=lambda: io.BytesIO(data))


# --- layer specs: the JSON form a build plan uses ------------------------------------------------


def entries_for(spec: dict, stack: ExitStack, epoch: int) -> Iterable[Entry]:
    """Entries of one layer spec: ``{"kind": "rootfs", "tar": path}``,
    ``{"kind": "wheels", "wheels": [[path, wheel file name], ...], "site_packages": dir, "include": dir}`` or
    ``{"kind": "files", "files": [[source path, destination, mode], ...]}``."""
    kind = spec["kind"]
    if kind == "rootfs":
        return rootfs_entries(stack.enter_context(tarfile.open(spec["tar"], "r:")))
    if kind == "wheels":
        scheme = Scheme(spec["site_packages"], spec["include"])
        return wheel_entries([(Path(p), name) for p, name in spec["wheels"]], stack, epoch=epoch, scheme=scheme)[0]
    if kind == "files":
        files = [file_entry(Path(src), dest, mode=int(mode), epoch=epoch) for src, dest, mode in spec["files"]]
        return parent_dirs([e.path for e in files], mtime=epoch) + files
    raise ValueError(f"unknown layer kind {kind!r}")
