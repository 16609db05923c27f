"""The tuning database: one file, MetaSchedule's JSON database plus how and where it was made.

Written by ``packager/harness/tune.py`` (``request-pack tune`` runs it inside the
image), read by the TVM backend when ``framework.options.tuning_log`` names it::

    {"format": "request-pack/metaschedule-database/v1", "tvm": "0.27.0.post1",
     "target": "...", "model_sha256": "...", "batch_sizes": [1], "trials": 64, "seed": 1,
     "cost_model": "random", "tuning_seconds": 812.3,
     "tuned_on": {"cpu_model": "...", "cores": 2, "platform": "linux/amd64", "machine": "x86_64"},
     "workloads": [[shash, module_json], ...], "records": [[workload_index, record_json], ...]}

``workloads`` and ``records`` are the lines ``JSONDatabase`` keeps in
``database_workload.json`` and ``database_tuning_record.json`` (pruned to the
best record of each workload). One file, so one sha256 pins the schedules and
the record of how they were made. The file may come from a stranger's artifact:
:func:`read_database` reads it bounded, parses it strictly and checks it against
the model, target and TVM version before TVM sees a byte of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.harness.errors import ConfigError

DB_FORMAT = "request-pack/metaschedule-database/v1"
DB_NAME = "tuning-database.json"
# EfficientNet-Lite0's pruned database is about 0.5 MB (one record per ~40 workloads); the cap is
# far above any real network's and far below what could hurt the harness's memory.
MAX_DB_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 20_000
COST_MODEL = "random"

_KEYS = {"format", "tvm", "target", "model_sha256", "batch_sizes", "trials", "seed", "cost_model", "tuning_seconds",
         "tuned_on", "workloads", "records"}
_MACHINE_KEYS = {"cpu_model", "cores", "platform", "machine"}
_MACHINE_TO_PLATFORM = {"x86_64": "linux/amd64", "aarch64": "linux/arm64", "armv7l": "linux/arm/v7"}


@dataclass(frozen=True)
class TuningDatabase:
    """A checked tuning database file (see the module doc)."""

    path: Path
    sha256: str
    tvm: str
    target: str
    model_sha256: str
    batch_sizes: tuple[int, ...]
    trials: int
    seed: int
    tuned_on: dict[str, Any]
    workloads: tuple[list, ...]
    records: tuple[list, ...]

    def describe(self) -> str:
        m = self.tuned_on
        return (f"MetaSchedule database sha256:{self.sha256[:16]}, {self.trials} trials seed {self.seed}, "
                f"tuned on {m['cpu_model'] or 'unknown CPU'} ({m['cores']} cores, {m['platform']})")

    def open(self, work_dir: Path):
        """The records as TVM's own JSONDatabase (two JSON-lines files written under ``work_dir``)."""
        from tvm.s_tir import meta_schedule as ms

        work_dir.mkdir(parents=True, exist_ok=True)
        wl, rec = work_dir / "database_workload.json", work_dir / "database_tuning_record.json"
        wl.write_text("".join(json.dumps(w) + "\n" for w in self.workloads), encoding="utf-8")
        rec.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
        try:
            db = ms.database.JSONDatabase(str(wl), str(rec), allow_missing=False)
            if len(db) != len(self.records):
                raise ValueError(f"TVM read {len(db)} of {len(self.records)} records")
        except Exception as e:  # TVM's parser raises its own errors for a workload it cannot read
            raise ConfigError(f"TVM cannot read the tuning records: {first_line(e)}", file=self.path) from None
        return db


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def read_database(path: Path, *, tvm_version: str | None = None, target: str | None = None,
                  model_sha256: str | None = None) -> TuningDatabase:
    """Read and check a tuning database; one ConfigError naming the file and the rule otherwise.

    Given ``tvm_version``, ``target`` or ``model_sha256``, the file must have been made for
    exactly those: schedules tuned for another model, target or TVM would not apply (TVM would
    silently fall back to its untuned schedules), so using one is an error, not a slowdown.
    """
    from packager import (
        wire,  # only here: pydantic comes with it, and tvm images carry pydantic
    )

    def refuse(msg: str) -> ConfigError:
        return ConfigError(msg.removeprefix(f"{path}: "), file=path)

    data = wire.read_regular(Path(path), MAX_DB_BYTES, error=refuse, shown=str(path))
    doc = wire.loads(data, error=refuse, shown=str(path))
    sha = hashlib.sha256(data).hexdigest()
    if not isinstance(doc, dict):
        raise refuse("a tuning database is a JSON object")
    if doc.get("format") != DB_FORMAT:
        raise refuse(f"format is {str(doc.get('format'))[:80]!r}, not {DB_FORMAT!r}")
    if set(doc) != _KEYS:
        missing, extra = sorted(_KEYS - set(doc)), sorted(k[:80] for k in set(doc) - _KEYS)  # a key may be megabytes
        raise refuse(f"keys differ from {DB_FORMAT}: missing {missing}, unknown {extra[:5]}")
    for key in ("tvm", "target", "model_sha256", "cost_model"):
        if not isinstance(doc[key], str) or not doc[key]:
            raise refuse(f"{key} must be a non-empty string")
    for key in ("trials", "seed"):
        if not isinstance(doc[key], int) or isinstance(doc[key], bool) or doc[key] < 0:
            raise refuse(f"{key} must be a non-negative integer")
    batches = doc["batch_sizes"]
    if not isinstance(batches, list) or not batches or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
        raise refuse("batch_sizes must be a non-empty list of positive integers")
    machine = doc["tuned_on"]
    if not isinstance(machine, dict) or set(machine) != _MACHINE_KEYS:
        raise refuse(f"tuned_on must hold exactly {sorted(_MACHINE_KEYS)}")
    if not isinstance(machine["cores"], int) or not all(isinstance(machine[k], (str, type(None))) for k in ("cpu_model", "platform", "machine")):
        raise refuse("tuned_on: cores must be an integer, the others strings")
    workloads, records = doc["workloads"], doc["records"]
    if not isinstance(workloads, list) or not isinstance(records, list):
        raise refuse("workloads and records must be lists")
    if len(workloads) > MAX_ENTRIES or len(records) > MAX_ENTRIES:
        raise refuse(f"more than {MAX_ENTRIES} workloads or records")
    for i, w in enumerate(workloads):
        if not (isinstance(w, list) and len(w) == 2 and isinstance(w[0], str) and isinstance(w[1], (dict, str))):
            raise refuse(f"workloads[{i}] is not [structural hash, module]")
    for i, r in enumerate(records):
        if not (isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and not isinstance(r[0], bool)
                and 0 <= r[0] < len(workloads) and isinstance(r[1], list)):
            raise refuse(f"records[{i}] is not [workload index < {len(workloads)}, record]")
    expected = {"tvm": tvm_version, "target": target, "model_sha256": model_sha256}
    for key, want in expected.items():
        if want is not None and doc[key] != want:
            raise refuse(f"made for {key} {doc[key][:80]!r}, this build uses {want[:80]!r}")
    return TuningDatabase(Path(path), sha, doc["tvm"], doc["target"], doc["model_sha256"], tuple(batches),
                          doc["trials"], doc["seed"], dict(machine), tuple(workloads), tuple(records))


def machine() -> dict[str, Any]:
    """What the schedules were measured on (inside the sandbox: the host's CPU, the container's view)."""
    from packager.harness.outputs import collect_system

    system = collect_system(image_digest=None, frameworks={})
    return {"cpu_model": system.cpu_model, "cores": system.cores, "machine": _platform.machine(),
            "platform": _MACHINE_TO_PLATFORM.get(_platform.machine(), _platform.machine())}


def with_cores(target: str | dict, cores: int) -> dict:
    """The target MetaSchedule tunes for: the given one with ``num-cores`` (it refuses a CPU target
    without it). The tuned artifact compiles for exactly this target, so the database applies."""
    # TVM 0.27 takes a target as a kind name or a JSON object, no longer the "llvm -mcpu=..." form.
    target = target if isinstance(target, dict) else {"kind": target}
    return target if "num-cores" in target else {**target, "num-cores": cores}


def write_database(doc: dict[str, Any], path: Path) -> str:
    """Canonical bytes (sorted keys, no spaces): the sha256 depends on the content only."""
    data = (json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()
