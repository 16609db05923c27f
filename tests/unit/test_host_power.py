"""The runner's host power probe (packager/run/power.py): for real where this machine can, on a sysfs-shaped tree where it cannot."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from packager.results import Power
from packager.run.power import POWERCAP, PROBE, HostPowerProbe, package_zones

# Why a file tree stands in for /sys/class/powercap below: this machine has no
# powercap interface (no RAPL counters exposed to it), so the counting, the zone
# choice and the wrap handling can only be exercised on a directory laid out as
# the kernel lays it out. The absent case is tested for real.
FAKE_SYSFS_REASON = "fake sysfs: this machine exposes no /sys/class/powercap; the tree mimics the kernel's layout"


def test_the_real_host_gives_a_reading_or_says_why() -> None:
    with HostPowerProbe(interval_s=0.05) as probe:
        time.sleep(0.12)
    r = probe.reading()
    Power.model_validate(r.model_dump())  # a valid wire record either way
    assert r.probe == PROBE and r.window
    if not POWERCAP.is_dir():  # this machine: no powercap at all
        assert r.peak_w is None and r.mean_w is None and r.energy_j is None
        assert r.reason == f"{POWERCAP} does not exist: this host exposes no powercap interface (no RAPL energy counters)"
        assert r.source == str(POWERCAP)
    else:  # a host with RAPL: a reading, or the root-only / no-package reason
        assert (r.energy_j is not None and r.window_s and r.window_s >= 0.1) or r.reason


def set_counter(zone_dir: Path, value: int) -> None:
    """A kernel read of energy_uj is atomic; a rewritten file is not, so the new value replaces the file whole."""
    tmp = zone_dir / "energy_uj.new"
    tmp.write_text(f"{value}\n")
    os.replace(tmp, zone_dir / "energy_uj")


def zone(root: Path, name: str, label: str, energy: int, max_range: int = 262143328850) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


def sysfs(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "powercap"
    p0 = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    p1 = zone(root, "intel-rapl:1", "package-1", 999_000_000, max_range=1_000_000_000)  # about to wrap
    # Not summed: a sub-zone of a package, the whole platform, and the MMIO view of package 0.
    zone(root, "intel-rapl:0:0", "core", 5)
    zone(root, "intel-rapl:2", "psys", 7)
    zone(root, "intel-rapl-mmio:0", "package-0", 9)
    return root, p0, p1


@pytest.mark.parametrize("case", [FAKE_SYSFS_REASON])
def test_energy_is_summed_over_package_zones_across_a_wrap(tmp_path: Path, case: str) -> None:
    root, p0, p1 = sysfs(tmp_path)
    assert [z.name for z in package_zones(root)] == ["package-0", "package-1"]
    (root / "intel-rapl:2" / "energy_uj").write_text("0\n")  # psys moving would change nothing
    steps = 6

    def load() -> None:
        # 6 steps of +2 J on package 0 and +3 J on package 1 (wrapping at 1,000 J on the 1st step).
        for i in range(1, steps + 1):
            time.sleep(0.03)
            set_counter(p0, 1_000_000 + i * 2_000_000)
            set_counter(p1, (999_000_000 + i * 3_000_000) % 1_000_000_000)

    with HostPowerProbe(root, interval_s=0.05) as probe:
        t = threading.Thread(target=load)
        t.start()
        t.join()
    r = probe.reading()
    assert r.reason is None and r.energy_j == pytest.approx(steps * 5.0)
    assert r.window_s and r.mean_w == pytest.approx(r.energy_j / r.window_s, rel=1e-3)
    assert r.peak_w is not None and r.peak_w >= r.mean_w
    assert r.source == f"{p0} (package-0), {p1} (package-1)"


@pytest.mark.parametrize("case", [FAKE_SYSFS_REASON])
def test_unreadable_or_missing_zones_give_null_and_the_reason(tmp_path: Path, case: str) -> None:
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0:0", "core", 1)
    with HostPowerProbe(root) as probe:
        pass
    r = probe.reading()
    assert r.peak_w is None and r.energy_j is None and r.reason == f"no package zone (intel-rapl:N named package-N) under {root}"

    d = zone(root, "intel-rapl:0", "package-0", 1)
    (d / "energy_uj").unlink()
    (d / "energy_uj").mkdir()  # a read that fails (tests run as root, so a mode of 000 would still read)
    with HostPowerProbe(root) as probe:
        pass
    r = probe.reading()
    assert r.peak_w is None and r.reason.startswith(f"cannot read {d / 'energy_uj'}:")


@pytest.mark.parametrize("case", [FAKE_SYSFS_REASON])
def test_a_counter_that_vanishes_midway_gives_no_partial_number(tmp_path: Path, case: str) -> None:
    root, p0, _ = sysfs(tmp_path)
    with HostPowerProbe(root, interval_s=0.02) as probe:
        (p0 / "energy_uj").unlink()
        time.sleep(0.06)
    r = probe.reading()
    assert r.energy_j is None and r.mean_w is None and r.reason.startswith("stopped during the window: cannot read")


def test_a_remote_engine_is_not_measured_by_this_hosts_counters() -> None:
    with HostPowerProbe(remote=True) as probe:
        pass
    r = probe.reading()
    assert r.peak_w is None and r.energy_j is None and "remote engine" in (r.reason or "")


@pytest.mark.parametrize("case", [FAKE_SYSFS_REASON])
def test_the_harness_probe_sums_the_same_zones(tmp_path: Path, case: str) -> None:
    from packager.harness.power import RaplReader

    root, p0, _ = sysfs(tmp_path)
    t0 = time.monotonic()
    reader = RaplReader(root)
    t1 = time.monotonic()
    time.sleep(0.05)
    set_counter(p0, 1_000_000 + 2_000_000)  # +2 J on package 0
    for other in ("intel-rapl:2", "intel-rapl:0:0", "intel-rapl-mmio:0"):  # +1000 J that must not count
        set_counter(root / other, 1_000_000_000)
    t2 = time.monotonic()
    watts = reader.read()
    t3 = time.monotonic()
    assert watts is not None and 2.0 / (t3 - t0) <= watts <= 2.0 / (t2 - t1)
