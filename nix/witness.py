"""Check, inside the Nix sandbox, that a base root filesystem tar holds exactly the locked .debs' bytes.

The base tar is made by mmdebstrap, which runs maintainer scripts Nix cannot
run, so the derivation takes it as a pinned input. This check makes Nix a
witness of its contents as far as the .debs determine them:

1. every regular file (or hard link) a locked .deb ships is in the tar with
   the same bytes, unless dpkg's path-exclude options (``rootfs.DPKG_OPTIONS``)
   drop it; a conffile under ``etc/`` that a maintainer script edited is
   reported, not failed;
2. the files of the tar that no .deb ships (made by maintainer scripts and
   mmdebstrap: passwd, the dpkg database, ld.so.cache, ...) are counted and,
   outside etc/, var/ and root/, listed in the build log.

Paths are compared after merged-/usr canonicalisation (``bin`` -> ``usr/bin``
...), since bookworm's mmdebstrap merges /usr after unpacking.

Standard library only (lzma for data.tar.xz). Usage: python3 witness.py WITNESS.json
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import lzma
import sys
import tarfile
import zlib
from pathlib import Path

MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib32": "usr/lib32", "lib64": "usr/lib64",
          "libx32": "usr/libx32"}


class WitnessFailed(Exception):
    pass


def canon(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if parts and parts[0] in MERGED:
        parts = MERGED[parts[0]].split("/") + parts[1:]
    return "/".join(parts)


def ar_members(data: bytes, what: str):
    if data[:8] != b"!<arch>\n":
        raise WitnessFailed(f"{what}: not an ar archive")
    off = 8
    while off + 60 <= len(data):
        header = data[off:off + 60]
        name, size = header[:16].strip().decode().rstrip("/"), int(header[48:58])
        off += 60
        yield name, data[off:off + size]
        off += size + (size & 1)


def _data_tar(deb: Path) -> bytes:
    for name, member in ar_members(deb.read_bytes(), deb.name):
        if name == "data.tar.xz":
            return lzma.decompress(member)
        if name == "data.tar.gz":
            return zlib.decompress(member, 16 + zlib.MAX_WBITS)
        if name == "data.tar":
            return member
        if name.startswith("data.tar"):
            raise WitnessFailed(f"{deb.name}: {name} is not a compression this witness reads")
    raise WitnessFailed(f"{deb.name}: no data.tar member")


def file_hashes(tar: tarfile.TarFile) -> dict[str, str]:
    """sha256 of every regular file and hard link of a tar, by canonical path."""
    out: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for m in tar:
        if m.isfile():
            digest = hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
            by_name[m.name.lstrip("./")] = digest
            out[canon(m.name)] = digest
        elif m.islnk():
            target = by_name.get(m.linkname.lstrip("./"))
            if target is not None:
                out[canon(m.name)] = target
    return out


def excluded(path: str, options: list[str]) -> bool:
    """dpkg's rule: the last matching path-exclude/path-include option decides."""
    verdict = False
    for opt in options:
        kind, _, pattern = opt.partition("=")
        if fnmatch.fnmatch("/" + path, pattern):
            verdict = kind == "path-exclude"
    return verdict


def witness(spec: dict) -> str:
    shipped: dict[str, tuple[str, str]] = {}
    for deb in spec["debs"]:
        with tarfile.open(fileobj=io.BytesIO(_data_tar(Path(deb))), mode="r:") as tar:
            for path, digest in file_hashes(tar).items():
                shipped[path] = (Path(deb).name.split("-", 1)[-1], digest)
    with tarfile.open(spec["tar"], mode="r:") as tar:
        present = file_hashes(tar)
    same = conffiles = dropped = 0
    for path, (deb, digest) in sorted(shipped.items()):
        got = present.get(path)
        if got == digest:
            same += 1
        elif got is None and excluded(path, spec["dpkg_options"]):
            dropped += 1
        elif got is not None and path.startswith("etc/"):
            conffiles += 1
        elif got is None:
            raise WitnessFailed(f"{spec['platform']}: {path} of {deb} is missing from the base root filesystem")
        else:
            raise WitnessFailed(f"{spec['platform']}: {path} differs from its bytes in {deb}")
    extra = sorted(p for p in present if p not in shipped)
    odd = [p for p in extra if not p.startswith(("etc/", "var/", "root/"))]
    return (f"{spec['platform']}: base root filesystem witnessed: {same} files with their .deb's bytes, "
            f"{dropped} dropped by dpkg path-excludes, {conffiles} conffiles edited by maintainer scripts, "
            f"{len(extra)} files not from any .deb ({len(odd)} outside etc/ var/ root/: {', '.join(odd[:10])})")


def main(path: str) -> int:
    for spec in json.loads(Path(path).read_text(encoding="utf-8")):
        try:
            sys.stderr.write(witness(spec) + "\n")
        except WitnessFailed as e:
            sys.stderr.write(f"request-pack witness: {e}\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
