"""Host power in the signed result: the runner's reading, from ``run.json`` into the predicate.

The runner reads power on the host, outside the sandbox (``packager/run/power.py``:
RAPL package counters around the container's run), and records it in its run
record, ``run.json``, as ``host_power``. The harness's own probe, inside the
sandbox, is ``metrics.power`` and is usually empty: since Linux 5.10 the
counters are root-only. Signing copies the runner's record into the predicate's
``host_power``, so the board and every reader of the statement get it with its
source and window, or with null figures and the reason there are none.

Check 4 of verify holds the signed record to two rules:

- it equals ``host_power`` in the bundle's ``run.json`` (itself a signed file);
- it is coherent: a reading names its source and window, its mean is its energy
  over its window and its peak is not below its mean; no reading says why.

A statement signed before this existed has no ``host_power`` and is not refused
for it (its ``run.json`` may hold a reading the signer did not vouch for in the
predicate; only the file's bytes are signed then).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from packager import wire
from packager.bundle.knobs import RUN_RECORD_NAME
from packager.bundle.statement import Statement
from packager.errors import BadInput
from packager.results import Power

HOST_POWER_KEY = "host_power"
MAX_RUN_RECORD_BYTES = 1 << 20  # a run record is ~2 KB; a larger one is not ours
# Rounding in the runner's record (W to 1 mW, s to 1 ms, J to 1 uJ) stays far inside these.
MEAN_TOLERANCE_REL = 0.01
MEAN_TOLERANCE_W = 0.01


def host_power_of(record: object, shown: str) -> Power | None:
    """The ``host_power`` of a parsed run record; ``None`` when it has none (a runner before the probe).

    Raises ``ValueError`` with the reason when the entry is there but is not a power record."""
    raw = record.get(HOST_POWER_KEY) if isinstance(record, Mapping) else None
    if raw is None:
        return None
    try:
        return Power.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in (HOST_POWER_KEY, *first["loc"]))
        raise ValueError(f"{shown}: {where}: {first['msg']}") from None


def read_host_power(result_dir: Path) -> Power | None:
    """What a signer puts into the predicate: the run record's host reading, checked for coherence.

    No run record (a directory sealed without our runner, e.g. from a Kubernetes pod) gives ``None``."""
    path = result_dir / RUN_RECORD_NAME
    if not path.exists():
        return None
    record = wire.load_file(path, MAX_RUN_RECORD_BYTES, error=BadInput, shown=str(path))
    try:
        power = host_power_of(record, RUN_RECORD_NAME)
    except ValueError as e:
        raise BadInput(str(e), file=path) from None
    problems = coherence_problems(power) if power is not None else []
    if problems:
        raise BadInput(f"{HOST_POWER_KEY}: " + "; ".join(problems), file=path)
    return power


def has_reading(power: Power) -> bool:
    return power.peak_w is not None or power.mean_w is not None or power.energy_j is not None


def coherence_problems(power: Power) -> list[str]:
    """Why a power record cannot be what a probe measured (empty: it can)."""
    if not has_reading(power):
        return [] if power.reason else ["no reading and no reason"]
    problems = []
    missing = [f for f in ("peak_w", "mean_w", "energy_j", "window_s", "source") if getattr(power, f) is None]
    if missing:
        return [f"a reading without {', '.join(missing)}"]
    if power.reason:
        problems.append(f"a reading that also gives a reason for having none ({power.reason!r})")
    if not power.window_s:
        return [*problems, "a reading over an empty window"]
    assert power.mean_w is not None and power.energy_j is not None and power.peak_w is not None
    implied = power.energy_j / power.window_s
    if abs(power.mean_w - implied) > MEAN_TOLERANCE_W + MEAN_TOLERANCE_REL * implied:
        problems.append(f"mean {power.mean_w} W but {power.energy_j} J over {power.window_s} s is {implied:.3f} W")
    if power.peak_w + MEAN_TOLERANCE_W < power.mean_w * (1 - MEAN_TOLERANCE_REL):
        problems.append(f"peak {power.peak_w} W below the mean {power.mean_w} W")
    return problems


def host_power_problems(statement: Statement, run_record: object | None) -> list[str]:
    """Check 4's part: the signed host power agrees with run.json and is coherent (empty: it does)."""
    signed = statement.predicate.host_power
    if signed is None:
        return []
    if run_record is None:
        return [f"the statement carries host power but the bundle has no readable {RUN_RECORD_NAME}"]
    try:
        recorded = host_power_of(run_record, RUN_RECORD_NAME)
    except ValueError as e:
        return [str(e)]
    problems = []
    if recorded != signed:
        problems.append(f"host power in the statement differs from {HOST_POWER_KEY} in {RUN_RECORD_NAME}")
    problems += [f"host power: {p}" for p in coherence_problems(signed)]
    return problems

