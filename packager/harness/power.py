"""Power probes: real readers where the hardware exposes them, otherwise null and the reason.

A probe samples in a background thread while a scenario runs and reports peak
and mean watts. Readers:

- ``rapl``: Intel/AMD RAPL energy counters under /sys/class/powercap
  (``intel-rapl:N/energy_uj`` of the zones named package-N only, summed; since
  Linux 5.10 root-only, so inside the sandbox this usually records why not, and
  the runner's host probe, packager/run/power.py, reads them outside); power is the
  energy difference over each sampling interval, with counter wrap handled via
  ``max_energy_range_uj``.
- ``ina3221``: the INA3221 monitors on Jetson boards, through hwmon
  (``in<N>_input`` mV times ``curr<N>_input`` mA) or the older iio driver
  (``in_power<N>_input`` mW); the rails are summed.
- ``command``: a command named by the target profile that prints one number,
  watts, per invocation.

Nothing here ever makes up a number: a probe that cannot read gives
``peak_w = mean_w = None`` and says why.
"""

from __future__ import annotations

import abc
import glob
import logging
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBES = ("none", "rapl", "ina3221", "command")


@dataclass(frozen=True)
class PowerReading:
    probe: str
    peak_w: float | None
    mean_w: float | None
    reason: str | None = None
    samples: int = 0

    def to_dict(self) -> dict:
        return {"probe": self.probe, "peak_w": self.peak_w, "mean_w": self.mean_w, "reason": self.reason}


class Unavailable(Exception):
    """The probe's hardware or command is absent; the message is the recorded reason."""


class _Reader(abc.ABC):
    """Returns instantaneous watts (or None for the first RAPL read, which has no interval yet)."""

    @abc.abstractmethod
    def read(self) -> float | None: ...


_RAPL_TOP_ZONE = re.compile(r"intel-rapl:\d+")


def rapl_package_zones(root: Path) -> list[tuple[Path, str]]:
    """(zone directory, name) of the top-level RAPL zones named package-N under a powercap root.

    Only those are summed: sub-zones (intel-rapl:N:M: core, uncore, dram) are parts of
    or beside a package, ``psys`` (also a top-level intel-rapl:N) covers the whole
    platform, and intel-rapl-mmio:N is a second view of a package's counter; adding
    any of them to the packages would count energy twice. Also used by the runner's
    host probe (packager/run/power.py). A zone whose name cannot be read raises OSError.
    """
    out = []
    for d in sorted(p for p in root.iterdir() if _RAPL_TOP_ZONE.fullmatch(p.name)):
        name = (d / "name").read_text().strip()
        if name.startswith("package"):
            out.append((d, name))
    return out


class RaplReader(_Reader):
    def __init__(self, root: Path = Path("/sys/class/powercap")) -> None:
        if not root.is_dir():
            raise Unavailable(f"{root} does not exist (no RAPL powercap interface exposed)")
        try:
            domains = [d for d, _ in rapl_package_zones(root)]
        except OSError as err:
            raise Unavailable(f"cannot read the zone names under {root}: {err}") from None
        if not domains:
            raise Unavailable(f"no package zone (intel-rapl:N named package-N) under {root}")
        self._domains = []
        for d in domains:
            try:
                e = int((d / "energy_uj").read_text())
                rng = int((d / "max_energy_range_uj").read_text()) if (d / "max_energy_range_uj").exists() else 2**32
            except (OSError, ValueError) as err:
                raise Unavailable(f"cannot read {d / 'energy_uj'}: {err}") from None
            self._domains.append([d / "energy_uj", rng, e])
        self._t = time.monotonic()

    def read(self) -> float | None:
        now = time.monotonic()
        joules = 0.0
        for dom in self._domains:
            e = int(dom[0].read_text())
            delta = e - dom[2]
            if delta < 0:
                delta += dom[1]
            dom[2] = e
            joules += delta / 1e6
        dt, self._t = now - self._t, now
        return joules / dt if dt > 0 else None


class Ina3221Reader(_Reader):
    def __init__(self, root: Path = Path("/sys")) -> None:
        self._pairs: list[tuple[Path, Path]] = []
        self._power: list[Path] = []
        for hw in glob.glob(str(root / "class/hwmon/hwmon*")):
            hwp = Path(hw)
            try:
                name = (hwp / "name").read_text().strip()
            except OSError:
                continue
            if name != "ina3221":
                continue
            for vin in sorted(hwp.glob("in[0-9]*_input")):
                n = vin.name[2:].split("_")[0]
                cur = hwp / f"curr{n}_input"
                if cur.exists():
                    self._pairs.append((vin, cur))
        self._power = [Path(p) for p in glob.glob(str(root / "bus/i2c/drivers/ina3221x/*/iio:device*/in_power*_input"))]
        if not self._pairs and not self._power:
            raise Unavailable("no INA3221 monitor under /sys/class/hwmon or /sys/bus/i2c/drivers/ina3221x")

    def read(self) -> float | None:
        mw = sum(float(p.read_text()) for p in self._power)
        w = mw / 1000.0
        for vin, cur in self._pairs:
            w += float(vin.read_text()) / 1000.0 * float(cur.read_text()) / 1000.0
        return w


class CommandReader(_Reader):
    def __init__(self, command: str | None) -> None:
        if not command:
            raise Unavailable("power_probe is 'command' but target.power_command is empty")
        self._argv = shlex.split(command)
        self.read()  # fail now, with the command's own complaint, rather than inside the sampling thread

    def read(self) -> float | None:
        try:
            out = subprocess.run(self._argv, capture_output=True, text=True, timeout=5, check=True).stdout
        except FileNotFoundError:
            raise Unavailable(f"power command {self._argv[0]!r} not found") from None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"power command {self._argv!r} failed: {e}") from None
        try:
            return float(out.strip().split()[0])
        except (ValueError, IndexError):
            raise Unavailable(f"power command printed {out.strip()[:80]!r}, not a number of watts") from None


class PowerMonitor:
    """Context manager sampling a reader every ``interval_s`` while a scenario runs."""

    def __init__(self, probe: str = "none", *, command: str | None = None, interval_s: float = 0.1) -> None:
        self.probe = probe
        self.interval_s = interval_s
        self._values: list[float] = []
        self._reason: str | None = None
        self._reader: _Reader | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            if probe == "none":
                raise Unavailable("no power probe configured for this target (target.power_probe: none)")
            if probe == "rapl":
                self._reader = RaplReader()
            elif probe == "ina3221":
                self._reader = Ina3221Reader()
            elif probe == "command":
                self._reader = CommandReader(command)
            else:
                raise Unavailable(f"unknown power probe {probe!r} (known: {', '.join(PROBES)})")
        except Unavailable as e:
            self._reason = str(e)
        except OSError as e:
            self._reason = f"{probe}: {e}"

    def __enter__(self) -> "PowerMonitor":
        if self._reader is not None:
            self._thread = threading.Thread(target=self._loop, name="power-probe", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        assert self._reader is not None
        try:
            self._reader.read()  # RAPL's first read only sets the baseline
            while not self._stop.wait(self.interval_s):
                v = self._reader.read()
                if v is not None:
                    self._values.append(v)
        except (Unavailable, OSError, ValueError) as e:
            self._reason = f"{self.probe} stopped: {e}"

    def reading(self) -> PowerReading:
        if not self._values:
            reason = self._reason or f"{self.probe}: no samples taken (run shorter than {self.interval_s}s)"
            return PowerReading(self.probe, None, None, reason)
        return PowerReading(self.probe, max(self._values), sum(self._values) / len(self._values), self._reason, len(self._values))
