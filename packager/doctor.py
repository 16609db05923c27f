"""What this machine can do for request-pack, and the command that fixes each gap.

Every probe is a small function returning a frozen :class:`Check`. Probes that
read the filesystem take their directories as arguments so they can be tested
against a temporary tree; probes that ask a daemon or a binary run the real
thing with a timeout and turn any failure into a ``missing`` check with the
reason, never an exception.

Checks roll up into *capabilities* (``docker``, ``emulation``, ``gpu`` ...) —
the same names as the pytest markers, so ``tests/conftest.py`` and
``request-pack doctor --require`` decide availability in one place.
"""

from __future__ import annotations

import enum
import glob
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from packager import engine
from packager.errors import BadInput, EnvironmentMissing
from packager.platforms import Platform

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
FPGA_MANAGER_DIR = Path("/sys/class/fpga_manager")
# Below this, one multi-arch build (three root filesystems plus layers) may not fit.
MIN_CACHE_FREE = 5 * 1024**3

FIX_SETUP = "make setup"
FIX_BINFMT = "qemu/binfmt.sh  (as root; or make setup)"
FIX_GPU = (
    "install the NVIDIA driver and nvidia-container-toolkit, then "
    "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
)
FIX_FPGA = "load the FPGA driver (xclmgmt/xocl, fpga_manager or xdevcfg) and check its /dev nodes"


class Status(str, enum.Enum):
    OK = "ok"
    MISSING = "missing"
    ABSENT_OPTIONAL = "absent-optional"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    capability: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capability": self.capability,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


# Optional hardware: one working device of any kind is enough, and its absence
# is normal (absent-optional). Everything else needs all of its checks ok.
OPTIONAL_CAPABILITIES = frozenset({"gpu", "fpga"})
CAPABILITIES = (
    "docker", "podman", "buildah", "emulation", "mmdebstrap", "skopeo", "umoci",
    "nix", "gpu", "fpga", "host",
)


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    host: dict[str, Any] = field(default_factory=dict)

    def by_capability(self, capability: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.capability == capability)

    def has(self, capability: str) -> bool:
        checks = self.by_capability(capability)
        if not checks:
            return False
        if capability in OPTIONAL_CAPABILITIES:
            return any(c.ok for c in checks)
        return all(c.ok for c in checks)

    def capabilities(self) -> dict[str, bool]:
        present = []
        for c in self.checks:
            if c.capability not in present:
                present.append(c.capability)
        return {cap: self.has(cap) for cap in present}

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "host": dict(self.host),
            "capabilities": self.capabilities(),
            "checks": [c.to_json() for c in self.checks],
        }


# --- running things -----------------------------------------------------------


def _run(argv: Sequence[str], timeout: float = 30) -> tuple[str | None, str]:
    """Run ``argv``; return (stdout, "") on success or (None, reason) on failure."""
    if shutil.which(argv[0]) is None:
        return None, f"{argv[0]} not on PATH"
    log.debug("+ %s", " ".join(argv))
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"{argv[0]} timed out after {timeout:.0f} s"
    except OSError as e:
        return None, f"{argv[0]}: {e.strerror}"
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return None, f"{' '.join(argv[:2])} exited {proc.returncode}: {last[-1] if last else 'no output'}"
    return proc.stdout, ""


def _first_version(text: str) -> str:
    match = re.search(r"\d+\.\d+(?:\.\d+)?(?:[-+~][\w.+~-]*)?", text)
    if match:
        return match.group(0)
    lines = text.strip().splitlines()
    return lines[0] if lines else "?"


# --- container engines ---------------------------------------------------------


def check_engine(name: str) -> Check:
    """The engine answers through ``packager.engine``, as the build and the runner will talk to it."""
    found = engine.probe(name)
    if found.description is None:
        return Check(name, name, Status.MISSING, found.reason, FIX_SETUP)
    d = found.description
    extra = [f"API {d['api']}" if "api" in d else "", f"runtime {d['runtime']}" if "runtime" in d else ""]
    return Check(name, name, Status.OK, ", ".join([d.get("version", "?"), *filter(None, extra)]))


def check_docker() -> Check:
    return check_engine("docker")


def check_podman() -> Check:
    return check_engine("podman")


def check_buildah() -> Check:
    return check_engine("buildah")


def check_tool(name: str, argv: Sequence[str] | None = None) -> Check:
    out, why = _run(list(argv or [name, "--version"]))
    if out is None:
        return Check(name, name, Status.MISSING, why, FIX_SETUP)
    return Check(name, name, Status.OK, _first_version(out))


# --- QEMU binfmt -------------------------------------------------------------


@dataclass(frozen=True)
class BinfmtEntry:
    """A parsed ``/proc/sys/fs/binfmt_misc/<name>`` file."""

    name: str
    enabled: bool
    interpreter: str
    flags: str


def parse_binfmt_entry(name: str, text: str) -> BinfmtEntry:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] not in ("enabled", "disabled"):
        raise ValueError(f"binfmt entry {name}: first line must be enabled/disabled, got {lines[:1]}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return BinfmtEntry(name=name, enabled=lines[0] == "enabled", interpreter=fields.get("interpreter", ""), flags=fields.get("flags", ""))


# QEMU before 8.2 shows emulated arm processes the host's /proc/cpuinfo; onnxruntime's
# cpuinfo then crashes on import on linux/arm64 (qemu/README.md has the investigation).
QEMU_MIN_VERSION = (8, 2)
FIX_QEMU = "scripts/setup.sh  (installs qemu-user from bookworm-backports, then re-registers binfmt)"


def parse_qemu_version(text: str) -> tuple[int, ...] | None:
    """``qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2…)`` -> (10, 0, 2)."""
    m = re.search(r"version (\d+(?:\.\d+)*)", text.splitlines()[0] if text else "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def qemu_version(interpreter: str) -> tuple[int, ...] | None:
    """The version of the QEMU a binfmt entry runs, or None when it cannot be asked.

    Debian's ``*-binfmt-P`` names refuse to run outside binfmt_misc, so ask the file they link to.
    """
    target = Path(interpreter).resolve()
    if not target.is_file():
        return None
    try:
        proc = subprocess.run([str(target), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_qemu_version(proc.stdout)


def check_emulation(binfmt_dir: Path = BINFMT_DIR, native: Platform | None = None) -> tuple[Check, ...]:
    """One check per platform: native, or a QEMU binfmt entry that is enabled with F."""
    native = native or Platform.native()
    mounted = (binfmt_dir / "status").exists()
    checks = []
    for plat in Platform:
        name = f"emulation {plat.value}"
        if plat is native:
            checks.append(Check(name, "emulation", Status.OK, "native"))
            continue
        entry_name = plat.qemu_binfmt
        if not mounted:
            checks.append(Check(name, "emulation", Status.MISSING, f"binfmt_misc not mounted at {binfmt_dir}", FIX_BINFMT))
            continue
        path = binfmt_dir / entry_name
        try:
            entry = parse_binfmt_entry(entry_name, path.read_text())
        except FileNotFoundError:
            checks.append(Check(name, "emulation", Status.MISSING, f"{entry_name} not registered", FIX_BINFMT))
            continue
        except (OSError, ValueError) as e:
            checks.append(Check(name, "emulation", Status.MISSING, f"{path}: {e}", FIX_BINFMT))
            continue
        if not entry.enabled:
            checks.append(Check(name, "emulation", Status.MISSING, f"{entry_name} registered but disabled", FIX_BINFMT))
        elif "F" not in entry.flags:
            # Without F the kernel looks the interpreter up inside each container,
            # where it does not exist, so foreign RUN steps fail.
            checks.append(Check(
                name, "emulation", Status.MISSING,
                f"{entry_name} enabled without the F (fix-binary) flag (flags {entry.flags or 'none'})", FIX_BINFMT,
            ))
        else:
            version = qemu_version(entry.interpreter)
            shown = ".".join(map(str, version)) if version else "unknown"
            if version is not None and version < QEMU_MIN_VERSION:
                checks.append(Check(name, "emulation", Status.MISSING,
                                    f"{entry_name} runs QEMU {shown}, older than 8.2 (onnxruntime crashes under it)", FIX_QEMU))
            else:
                checks.append(Check(name, "emulation", Status.OK, f"{entry_name} enabled, flags {entry.flags}, QEMU {shown}"))
    return tuple(checks)


# --- nix ----------------------------------------------------------------------


def parse_nix_config(text: str) -> dict[str, str]:
    """``key = value`` lines as printed by ``nix show-config`` or written in nix.conf."""
    config = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def check_nix() -> Check:
    out, why = _run(["nix", "--version"])
    if out is None:
        return Check("nix", "nix", Status.MISSING, why, FIX_SETUP)
    version = _first_version(out)
    shown, why = _run(["nix", "--extra-experimental-features", "nix-command", "show-config"])
    if shown is None:
        return Check("nix", "nix", Status.MISSING, f"nix {version} installed but show-config failed: {why}", FIX_SETUP)
    config = parse_nix_config(shown)
    sandbox = config.get("sandbox", "?")
    fallback = config.get("sandbox-fallback", "?")
    group = config.get("build-users-group", "")
    detail = f"{version}, sandbox {sandbox} (fallback {fallback}), build-users-group {group or '(none)'}"
    if sandbox != "true":
        return Check("nix", "nix", Status.MISSING, detail + ": builds are not sandboxed", FIX_SETUP)
    if fallback != "false":
        # With fallback on, a sandbox that cannot be set up silently becomes none.
        return Check("nix", "nix", Status.MISSING, detail + ": may silently build unsandboxed", FIX_SETUP)
    if group and not _group_exists(group):
        return Check("nix", "nix", Status.MISSING, detail + f": group {group} does not exist", FIX_SETUP)
    return Check("nix", "nix", Status.OK, detail)


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


# --- accelerators ---------------------------------------------------------------


def _nodes(patterns: Iterable[str]) -> list[str]:
    return sorted({p for pattern in patterns for p in glob.glob(pattern)})


def check_gpus(dev: Path = Path("/dev"), cdi_dirs: Sequence[Path] = CDI_DIRS) -> tuple[Check, ...]:
    checks = []
    out, why = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if out is not None and out.strip():
        checks.append(Check("nvidia-smi", "gpu", Status.OK, "; ".join(out.strip().splitlines())))
    else:
        checks.append(Check("nvidia-smi", "gpu", Status.ABSENT_OPTIONAL, why or "no GPU listed", FIX_GPU))
    nvidia = _nodes([str(dev / "nvidia*")])
    checks.append(_presence("/dev/nvidia*", "gpu", nvidia, FIX_GPU))
    specs = _nodes(str(d / f"*.{ext}") for d in cdi_dirs for ext in ("json", "yaml", "yml"))
    checks.append(_presence("CDI specs", "gpu", specs, FIX_GPU, none=f"none in {', '.join(map(str, cdi_dirs))}"))
    dri = _nodes([str(dev / "dri" / "*")])
    checks.append(_presence("/dev/dri", "gpu", dri, "install the GPU's kernel driver (amdgpu, i915, ...)"))
    return tuple(checks)


def check_fpgas(dev: Path = Path("/dev"), fpga_manager: Path = FPGA_MANAGER_DIR) -> tuple[Check, ...]:
    return (
        _presence("/dev/xdevcfg", "fpga", _nodes([str(dev / "xdevcfg")]), FIX_FPGA),
        _presence("/dev/xclmgmt*", "fpga", _nodes([str(dev / "xclmgmt*")]), FIX_FPGA),
        _presence("fpga_manager", "fpga", _nodes([str(fpga_manager / "*")]), FIX_FPGA, none=f"nothing in {fpga_manager}"),
        # UIO nodes are how many Zynq/PYNQ designs expose their fabric, but any
        # driver may create them: the detail lists them so a person can judge.
        _presence("/dev/uio*", "fpga", _nodes([str(dev / "uio*")]), FIX_FPGA),
    )


def _presence(name: str, capability: str, found: list[str], fix: str, none: str = "none") -> Check:
    if found:
        shown = ", ".join(found[:6]) + (f" (+{len(found) - 6} more)" if len(found) > 6 else "")
        return Check(name, capability, Status.OK, shown)
    return Check(name, capability, Status.ABSENT_OPTIONAL, none, fix)


# --- host ----------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def check_host(cache_dir: Path) -> tuple[tuple[Check, ...], dict[str, Any]]:
    cores_online = os.cpu_count() or 0
    cores_usable = len(os.sched_getaffinity(0))
    try:
        mem = parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        mem = {}
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    gib = 1024**3
    host = {
        "machine": os.uname().machine,
        "native_platform": Platform.native().value,
        "cores": cores_usable,
        "cores_online": cores_online,
        "memory_bytes": mem.get("MemTotal", 0),
        "memory_available_bytes": mem.get("MemAvailable", 0),
        "cache_dir": str(cache_dir),
        "cache_free_bytes": usage.free,
    }
    checks = [
        Check("cores", "host", Status.OK, f"{cores_usable} usable of {cores_online} online"),
        Check("memory", "host", Status.OK, f"{mem.get('MemTotal', 0) / gib:.1f} GiB total, {mem.get('MemAvailable', 0) / gib:.1f} GiB available"),
    ]
    disk = f"{usage.free / gib:.1f} GiB free at {cache_dir}"
    if usage.free < MIN_CACHE_FREE:
        checks.append(Check("cache disk", "host", Status.MISSING, disk + f" (< {MIN_CACHE_FREE // gib} GiB)",
                            "free space, or point REQUEST_PACK_CACHE at a larger disk"))
    else:
        checks.append(Check("cache disk", "host", Status.OK, disk))
    return tuple(checks), host


# --- the whole report ----------------------------------------------------------


def _default_cache_dir() -> Path:
    # Same rule as packager.cache.default_root; kept here so doctor works even
    # when the cache module cannot be imported.
    env = os.environ.get("REQUEST_PACK_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "request-pack"


def diagnose(cache_dir: Path | None = None) -> Report:
    cache_dir = cache_dir or _default_cache_dir()
    probes: list[Callable[[], Check | tuple[Check, ...]]] = [
        check_docker,
        check_podman,
        check_buildah,
        check_emulation,
        lambda: check_tool("mmdebstrap"),
        lambda: check_tool("skopeo"),
        lambda: check_tool("umoci", ["umoci", "--version"]),
        check_nix,
        check_gpus,
        check_fpgas,
    ]
    checks: list[Check] = []
    for probe in probes:
        result = probe()
        checks.extend(result if isinstance(result, tuple) else (result,))
    host_checks, host = check_host(cache_dir)
    checks.extend(host_checks)
    return Report(checks=tuple(checks), host=host)


def parse_requirements(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in CAPABILITIES]
    if unknown:
        raise BadInput(f"unknown capability {', '.join(unknown)}; choose from {', '.join(CAPABILITIES)}", field="--require")
    return names


def require(report: Report, names: Iterable[str]) -> None:
    """Raise :class:`EnvironmentMissing` naming each required capability that is absent."""
    problems, fixes = [], []
    for name in names:
        if report.has(name):
            continue
        bad = [c for c in report.by_capability(name) if not c.ok]
        problems.append(f"{name} ({'; '.join(f'{c.name}: {c.detail}' for c in bad) or 'not checked'})")
        fixes.extend(c.fix for c in bad if c.fix and c.fix not in fixes)
    if problems:
        raise EnvironmentMissing("missing " + ", ".join(problems), fix="; ".join(fixes) or None)


def render_table(report: Report):
    """A rich renderable of the report (table, then each distinct fix once); the CLI prints it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    style = {Status.OK: "green", Status.MISSING: "bold red", Status.ABSENT_OPTIONAL: "yellow"}
    table = Table(title="request-pack doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    fixes: dict[str, list[str]] = {}
    for c in report.checks:
        label = c.name if c.name == c.capability or c.name.startswith(c.capability + " ") else f"{c.capability}: {c.name}"
        table.add_row(label, Text(c.status.value, style=style[c.status]), c.detail)
        if not c.ok and c.fix:
            fixes.setdefault(c.fix, []).append(c.name)
    lines = [Text("")]
    for fix, names in fixes.items():
        lines.append(Text.assemble(("fix ", "bold"), (", ".join(dict.fromkeys(names)), "cyan"), ": ", fix))
    return Group(table, *lines) if fixes else table
