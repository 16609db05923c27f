"""Host power from the runner's probe into the signed predicate, through verify, onto the board.

The absent case runs for real (this machine has no /sys/class/powercap); a reading
with figures comes from the same probe reading a sysfs-shaped tree (see test_host_power).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from synthetic_results import Spec, write_result_dir
from test_host_power import FAKE_SYSFS_REASON, set_counter, sysfs

from packager.bundle.keys import TrustStore, generate_keypair, load_private_key
from packager.bundle.knobs import RUN_RECORD_NAME
from packager.bundle.power import coherence_problems
from packager.bundle.sign import (
    build_statement,
    sign_result_dir,
    sign_statement,
    write_envelope,
)
from packager.bundle.verify import verify_bundle
from packager.errors import BadInput, MetricsMismatch
from packager.results import Power
from packager.run.power import POWERCAP, HostPowerProbe
from packager.scoreboard.publish import publish
from packager.scoreboard.store import Board
from packager.scoreboard.web import render_result


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory):
    return generate_keypair(tmp_path_factory.mktemp("keys") / "k")


def result_with(tmp_path: Path, power: Power | None, name: str = "r") -> Path:
    d = write_result_dir(tmp_path / name, Spec())
    record = {"run_id": "x", "command": ["python3", "-m", "packager.harness"], "exit_code": 0}
    if power is not None:
        record["host_power"] = power.model_dump(mode="json")
    (d / RUN_RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return d


def published(tmp_path: Path, d: Path, key) -> tuple[object, str]:
    trust = TrustStore.load([key.public_path])
    verify_bundle(d, trust)
    with Board(f"sqlite:///{tmp_path / 'board.db'}") as board:
        row = publish(d, board, trust).row
        got = board.get(row.bundle_digest)
    assert got is not None
    return row, render_result(got[0], got[1], ())


def test_the_real_host_reading_is_signed_here_null_with_the_reason(tmp_path: Path, key) -> None:
    with HostPowerProbe(interval_s=0.05) as probe:  # the real host
        time.sleep(0.1)
    reading = probe.reading()
    d = result_with(tmp_path, reading)
    sign_result_dir(d, key.private_path)
    signed = build_statement(d).predicate.host_power
    assert signed == reading and signed.source and not coherence_problems(signed)
    row, page = published(tmp_path, d, key)
    if POWERCAP.is_dir():  # a host with RAPL: a reading, or why not (root-only counters, no package zone)
        assert row.power_w == signed.peak_w
        return
    assert signed.peak_w is None and "does not exist" in signed.reason
    assert row.power_w is None
    assert "not measured — host (rapl-host): /sys/class/powercap does not exist" in page


@pytest.mark.parametrize("case", [FAKE_SYSFS_REASON])
def test_a_reading_is_signed_verified_and_shown_in_watts_with_its_source(tmp_path: Path, key, case: str) -> None:
    root, p0, p1 = sysfs(tmp_path)
    with HostPowerProbe(root, interval_s=0.03) as probe:
        for i in range(1, 5):
            time.sleep(0.04)
            set_counter(p0, 1_000_000 + i * 2_000_000)
            set_counter(p1, (999_000_000 + i * 3_000_000) % 1_000_000_000)
    reading = probe.reading()
    assert reading.energy_j == pytest.approx(20.0) and not coherence_problems(reading)
    d = result_with(tmp_path, reading)
    sign_result_dir(d, key.private_path)
    assert build_statement(d).predicate.host_power == reading
    row, page = published(tmp_path, d, key)
    assert row.power_w == reading.peak_w  # the harness measured nothing, so the host's peak is the row's
    assert f"peak {reading.peak_w:.1f} W" in page and "J over" in page and "intel-rapl:0 (package-0)" in page


def test_a_bundle_without_host_power_verifies_as_before(tmp_path: Path, key) -> None:
    d = result_with(tmp_path, None)
    sign_result_dir(d, key.private_path)
    assert build_statement(d).predicate.host_power is None
    row, page = published(tmp_path, d, key)
    assert row.power_w is None and "not measured" in page


GOOD = Power(probe="rapl-host", peak_w=30.0, mean_w=20.0, energy_j=200.0, window_s=10.0, window="w", source="s")


@pytest.mark.parametrize("bad, why", [
    (GOOD.model_copy(update={"mean_w": 25.0}), "is 20.000 W"),
    (GOOD.model_copy(update={"peak_w": 10.0}), "below the mean"),
    (GOOD.model_copy(update={"source": None}), "without source"),
    (GOOD.model_copy(update={"reason": "none here"}), "also gives a reason"),
    (Power(probe="rapl-host"), "no reading and no reason"),
])
def test_sign_refuses_an_incoherent_record_and_verify_refuses_one_signed_anyway(tmp_path: Path, key, bad: Power, why: str) -> None:
    assert not coherence_problems(GOOD)
    d = result_with(tmp_path, bad)
    with pytest.raises(BadInput, match=why):
        sign_result_dir(d, key.private_path)
    # A signer that skipped the rule: the statement built from a coherent record, then the record swapped in.
    good_dir = result_with(tmp_path, GOOD, "good")
    st = build_statement(good_dir)
    (good_dir / RUN_RECORD_NAME).write_bytes((d / RUN_RECORD_NAME).read_bytes())
    forged = st.model_copy(update={"predicate": st.predicate.model_copy(update={"host_power": bad})})
    forged = forged.model_copy(update={"subject": [s for s in forged.subject if s.name != RUN_RECORD_NAME]
                                       + [s.model_copy(update={"digest": {"sha256": _sha(good_dir / RUN_RECORD_NAME)}})
                                          for s in forged.subject if s.name == RUN_RECORD_NAME]})
    write_envelope(good_dir, sign_statement(forged, load_private_key(key.private_path)))
    with pytest.raises(MetricsMismatch, match=f"host power: .*{why}"):
        verify_bundle(good_dir, TrustStore.load([key.public_path]))


def test_verify_refuses_a_predicate_that_differs_from_run_json(tmp_path: Path, key) -> None:
    d = result_with(tmp_path, GOOD)
    st = build_statement(d)
    forged = st.model_copy(update={"predicate": st.predicate.model_copy(
        update={"host_power": GOOD.model_copy(update={"peak_w": 300.0, "mean_w": 200.0, "energy_j": 2000.0})})})
    write_envelope(d, sign_statement(forged, load_private_key(key.private_path)))
    with pytest.raises(MetricsMismatch, match="host power in the statement differs from host_power in run.json"):
        verify_bundle(d, TrustStore.load([key.public_path]))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()

