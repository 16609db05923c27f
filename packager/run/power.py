"""Host power: RAPL energy counters read by the runner, outside the sandbox, around the measured window.

Why the runner and not the harness: since Linux 5.10 ``energy_uj`` is readable
by root only (CVE-2020-8694, "Platypus"), and the harness runs as uid 1000 in a
sandbox with every capability dropped, so from inside it can at best report
why it has no reading (``packager/harness/power.py``). The runner runs on the
host, usually as root, and brackets the container's run with this probe.

What is read: the package zones under ``/sys/class/powercap`` (``intel-rapl:N``
named ``package-N``; the kernel's AMD RAPL driver uses the same names). Only
those are summed: sub-zones (``intel-rapl:N:M``: core, uncore, dram) are parts
of or beside a package, ``psys`` covers the whole platform and
``intel-rapl-mmio:N`` is a second view of the same package counter, so adding
any of them to the packages would count energy twice. The record names the
zones read.

Counters wrap at ``max_energy_range_uj`` (about 262 kJ on many parts: 22 min at
200 W), so one reading before and one after cannot tell one wrap from two. A
thread samples every ``interval_s`` (far below a wrap) and adds up the deltas;
``peak_w`` is the highest mean over one interval, ``mean_w`` the energy over the
whole window.

No number is ever made up: absent, unreadable or a read that fails midway
gives ``peak_w = mean_w = energy_j = None`` and the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from packager.harness.power import rapl_package_zones
from packager.results import Power

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")
PROBE = "rapl-host"
# What the runner can see: the container from start to exit (the harness's start-up,
# accuracy pass and scenarios), not the scenarios alone.
WINDOW = "the container's run, start to exit, read by the runner on the host"


class Unavailable(Exception):
    """No host reading is possible; the message is the recorded reason."""


@dataclass
class _Zone:
    path: Path  # the zone directory
    name: str  # package-0, ...
    max_range_uj: int
    last_uj: int

    def describe(self) -> str:
        return f"{self.path} ({self.name})"


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError:
        raise Unavailable(
            f"{path} is readable by root only on this kernel (Linux >= 5.10, CVE-2020-8694): "
            "run the runner as root to record power"
        ) from None
    except (OSError, ValueError) as e:
        raise Unavailable(f"cannot read {path}: {e}") from None


def package_zones(root: Path = POWERCAP) -> list[_Zone]:
    """The package zones under ``root`` with their counters read once; ``Unavailable`` says why there are none."""
    if not root.is_dir():
        raise Unavailable(f"{root} does not exist: this host exposes no powercap interface (no RAPL energy counters)")
    try:
        found = rapl_package_zones(root)  # the one rule of which zones to sum (see the module doc)
    except OSError as e:
        raise Unavailable(f"cannot read the zone names under {root}: {e}") from None
    zones = []
    for d, name in found:
        max_range = _read_int(d / "max_energy_range_uj")
        if max_range <= 0:
            raise Unavailable(f"{d / 'max_energy_range_uj'} is {max_range}: cannot undo counter wraps")
        zones.append(_Zone(d, name, max_range, _read_int(d / "energy_uj")))
    if not zones:
        raise Unavailable(f"no package zone (intel-rapl:N named package-N) under {root}")
    return zones


class HostPowerProbe:
    """``with HostPowerProbe() as probe: run(); probe.reading()`` — a ``Power`` record either way."""

    def __init__(self, root: Path = POWERCAP, *, interval_s: float = 1.0, remote: bool = False) -> None:
        self.root = root
        self.interval_s = interval_s
        self._zones: list[_Zone] = []
        # A container on a remote engine (docker over ssh) draws its power there, not from this host's counters.
        self._reason: str | None = "the container ran on a remote engine host; this host's counters do not measure it" if remote else None
        self._joules = 0.0
        self._peak_w: float | None = None
        self._t0 = self._t_last = self._t1 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "HostPowerProbe":
        if self._reason is not None:
            return self
        try:
            self._zones = package_zones(self.root)
        except Unavailable as e:
            self._reason = str(e)
            log.info("no host power reading: %s", e)
            return self
        self._t0 = self._t_last = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="host-power", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._sample()  # the last stretch, up to the end of the window
        self._t1 = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            if self._reason is not None:
                return
            now = time.monotonic()
            joules = 0.0
            try:
                for z in self._zones:
                    e = _read_int(z.path / "energy_uj")
                    delta = e - z.last_uj
                    if delta < 0:  # wrapped once since the last sample (samples are far apart from two wraps)
                        delta += z.max_range_uj
                    z.last_uj = e
                    joules += delta / 1e6
            except Unavailable as e:
                self._reason = f"stopped during the window: {e}"
                return
            dt, self._t_last = now - self._t_last, now
            self._joules += joules
            if dt > 0:
                self._peak_w = max(self._peak_w or 0.0, joules / dt)

    def reading(self) -> Power:
        window_s = round(self._t1 - self._t0, 3) if self._t0 else None
        source = ", ".join(z.describe() for z in self._zones) if self._zones else str(self.root)
        if self._reason is not None or not window_s:
            reason = self._reason or "the window was empty"
            return Power(probe=PROBE, reason=reason, source=source, window=WINDOW, window_s=window_s)
        return Power(
            probe=PROBE,
            peak_w=round(self._peak_w, 3) if self._peak_w is not None else None,
            mean_w=round(self._joules / window_s, 3),
            energy_j=round(self._joules, 6),
            window_s=window_s,
            window=WINDOW,
            source=source,
        )
