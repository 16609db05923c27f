"""Shared by the runner's integration tests: a tiny busybox image and a loop device.

The image is imported from Debian's static busybox (``busybox-static``), so the
device and sandbox tests need neither the real build nor a registry.
"""

from __future__ import annotations

import grp
import io
import os
import subprocess
import tarfile
from pathlib import Path

APPLETS = ("sh", "ls", "cat", "id", "echo", "sleep", "test", "mkdir", "uname", "head", "wc", "grep",
           "touch", "stat", "chown", "true", "od", "env", "sed", "seq", "dd", "rm", "tr", "cut")
BUSYBOX_REPO = "request-pack-test/busybox"


def busybox_tar() -> bytes:
    if not Path("/bin/busybox").is_file():
        raise RuntimeError("busybox-static is not installed (apt-get install -y busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("bin", "tmp", "data", "out", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tf.addfile(ti)
        data = Path("/bin/busybox").read_bytes()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode = len(data), 0o755
        tf.addfile(ti, io.BytesIO(data))
        for name, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
            # merged /usr, so a host /usr bound read-only brings a working dynamic loader
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
        for applet in APPLETS:
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tf.addfile(ti)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nrunner:x:1000:1000::/tmp:/bin/sh\n"
        ti = tarfile.TarInfo("etc/passwd")
        ti.size, ti.mode = len(passwd), 0o644
        tf.addfile(ti, io.BytesIO(passwd))
    return buf.getvalue()


def import_busybox(client, tmp: Path, *, tag: str = "latest", env: dict[str, str] | None = None) -> str:
    """Import the busybox image into the docker daemon of ``client``; return its id (sha256:…)."""
    tar = tmp / "busybox.tar"
    tar.write_bytes(busybox_tar())
    changes = ["ENTRYPOINT []"] + [f"ENV {k}={v}" for k, v in (env or {}).items()]
    client.api.import_image_from_file(str(tar), repository=BUSYBOX_REPO, tag=tag, changes=changes)
    return client.api.inspect_image(f"{BUSYBOX_REPO}:{tag}")["Id"]


class LoopDevice:
    """A real block device: a loop device over a temp file with a known first block."""

    def __init__(self, tmp: Path, marker: bytes) -> None:
        self.backing = tmp / "loop.img"
        with self.backing.open("wb") as f:
            f.write(marker.ljust(4096, b"\0"))
            f.truncate(1 << 20)
        self.path = subprocess.run(["losetup", "-f", "--show", str(self.backing)], check=True,
                                   capture_output=True, text=True).stdout.strip()
        # What udev does for accelerator nodes (GROUP="disk", MODE="0660"); without udev the node is root-only.
        os.chown(self.path, -1, grp.getgrnam("disk").gr_gid)
        os.chmod(self.path, 0o660)

    def close(self) -> None:
        subprocess.run(["losetup", "-d", self.path], check=False)
