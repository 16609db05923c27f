"""Target platforms as OCI platform strings, and what each maps to elsewhere.

One table keeps the OCI, Debian, Python wheel, uname and QEMU names of each
platform together so no module has to translate on its own.
"""

from __future__ import annotations

import enum
import platform as _host
from dataclasses import dataclass


class Platform(str, enum.Enum):
    AMD64 = "linux/amd64"
    ARM64 = "linux/arm64"
    ARMV7 = "linux/arm/v7"

    @property
    def os(self) -> str:
        return "linux"

    @property
    def architecture(self) -> str:
        return _TABLE[self]["architecture"]

    @property
    def variant(self) -> str | None:
        return _TABLE[self]["variant"]

    @property
    def debian_arch(self) -> str:
        return _TABLE[self]["debian"]

    @property
    def uname_machine(self) -> str:
        return _TABLE[self]["uname"]

    @property
    def qemu_binfmt(self) -> str | None:
        """Name of the binfmt_misc entry that lets this host run the arch, if emulated."""
        return _TABLE[self]["qemu"]

    @property
    def wheel_tags(self) -> tuple[str, ...]:
        """manylinux/musllinux-free platform tags pip accepts for this platform, best first."""
        return _TABLE[self]["wheel_tags"]

    @property
    def slug(self) -> str:
        """Filesystem-safe name, e.g. ``linux-arm-v7``."""
        return self.value.replace("/", "-")

    @classmethod
    def native(cls) -> "Platform":
        machine = _host.machine()
        for plat, row in _TABLE.items():
            if machine in row["machines"]:
                return plat
        raise ValueError(f"unsupported host machine {machine!r}")

    @classmethod
    def parse(cls, text: str) -> "Platform":
        aliases = {"linux/arm64/v8": cls.ARM64, "linux/arm": cls.ARMV7}
        text = text.strip()
        if text in aliases:
            return aliases[text]
        return cls(text)

    def __str__(self) -> str:
        return self.value


def _manylinux(arch: str) -> tuple[str, ...]:
    # Newest first; glibc 2.36 on bookworm accepts every manylinux up to 2_36.
    versions = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    legacy = {"x86_64": ["manylinux2014_x86_64"], "aarch64": ["manylinux2014_aarch64"], "armv7l": ["manylinux2014_armv7l"]}
    return tuple(versions + legacy[arch] + [f"linux_{arch}"])


_TABLE: dict[Platform, dict] = {
    Platform.AMD64: {
        "architecture": "amd64",
        "variant": None,
        "debian": "amd64",
        "uname": "x86_64",
        "machines": ("x86_64", "amd64"),
        "qemu": "qemu-x86_64",
        "wheel_tags": _manylinux("x86_64"),
    },
    Platform.ARM64: {
        "architecture": "arm64",
        "variant": "v8",
        "debian": "arm64",
        "uname": "aarch64",
        "machines": ("aarch64", "arm64"),
        "qemu": "qemu-aarch64",
        "wheel_tags": _manylinux("aarch64"),
    },
    Platform.ARMV7: {
        "architecture": "arm",
        "variant": "v7",
        "debian": "armhf",
        "uname": "armv7l",
        "machines": ("armv7l",),
        "qemu": "qemu-arm",
        "wheel_tags": _manylinux("armv7l"),
    },
}


# --- the base system -----------------------------------------------------------------------


@dataclass(frozen=True)
class BaseSystem:
    """A Debian suite and what it fixes for every image built on it: the interpreter and the toolchain.

    The one place that names them; the manifest's ``system.debian.suite`` picks an entry.
    """

    suite: str
    python: str  # "3.11": the interpreter the images run (python3 in the suite)
    python_full: str  # the suite's patch release, for environment markers
    glibc: str  # manylinux tags up to this glibc run on the suite
    gcc: str  # the cross-compilers' major version

    @property
    def python_tag(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def python_exe(self) -> str:
        return f"python{self.python}"

    @property
    def site_packages(self) -> str:
        """Where wheels go in the image, relative to its root (Debian's dist-packages under /usr/local)."""
        return f"usr/local/lib/python{self.python}/dist-packages"


BASE_SYSTEMS: dict[str, BaseSystem] = {
    "bookworm": BaseSystem(suite="bookworm", python="3.11", python_full="3.11.2", glibc="2.36", gcc="12"),
}
DEFAULT_SUITE = "bookworm"


def base_system(suite: str = DEFAULT_SUITE) -> BaseSystem:
    return BASE_SYSTEMS[suite]
