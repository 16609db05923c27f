"""Check 4's look at the run config: the knobs a result claims are the knobs its run was given.

Three signed places name them: the runner's command line in ``run.json`` (the
harness's ``--run-config`` argument), ``metrics.json`` (what the harness applied)
and the predicate's ``run.run_config``. They must agree, and what the metrics
measured must fit them: the threads the backend reports, the Offline batch sizes.
A result with no run config has none of the three (older bundles have no
``run.json`` command to compare, and are not refused for it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from packager.bundle.statement import Statement
from packager.results import Metrics
from packager.runconfig import ARGV_FLAG

RUN_RECORD_NAME = "run.json"  # the runner's record of what it started (packager/run/runner.py RUN_RECORD)


def command_run_config(record: object) -> dict | None:
    """The run config in a run record's command, ``None`` when the command carries none."""
    command = record.get("command") if isinstance(record, Mapping) else None
    if not isinstance(command, Sequence) or isinstance(command, str):
        return None
    args = [a for a in command if isinstance(a, str)]
    if ARGV_FLAG not in args:
        return None
    i = args.index(ARGV_FLAG)
    if i + 1 >= len(args):
        return {"<missing>": "no value after " + ARGV_FLAG}
    try:
        value = json.loads(args[i + 1])
    except json.JSONDecodeError:
        return {"<unreadable>": args[i + 1][:80]}
    return value if isinstance(value, dict) else {"<not an object>": str(value)[:80]}


def run_config_problems(statement: Statement, metrics: Metrics, run_record: object | None) -> list[str]:
    """Disagreements between the signed run config, the metrics and the runner's command (empty: none)."""
    problems: list[str] = []
    claimed = metrics.run_config or None
    signed = statement.predicate.run.run_config or None
    if signed != claimed:
        problems.append(f"run config {signed} in the statement's run vs {claimed} in metrics.json")
    if run_record is not None:
        asked = command_run_config(run_record)
        if asked != claimed:
            problems.append(f"run config {claimed} in metrics.json vs {asked} in the command of {RUN_RECORD_NAME}")
    if not claimed:
        return problems
    threads = claimed.get("threads")
    if threads is not None and metrics.threads is not None and metrics.threads != threads:
        problems.append(f"run config threads {threads} but the backend ran {metrics.threads}")
    batch = claimed.get("batch")
    measured = sorted({t.batch_size for t in metrics.throughput})
    if batch is not None and measured and measured != [batch]:
        problems.append(f"run config batch {batch} but Offline measured batch size(s) {measured}")
    return problems


def platform_knob_problems(metrics: Metrics, knobs: Mapping[str, object]) -> list[str]:
    """Every knob the manifest sets for the platform that ran (``run.knobs``, ``runs.<platform>.knobs``) is in the
    run config the result claims: the runner starts from them, an asked knob only replaces one's value."""
    claimed = metrics.run_config or {}
    missing = sorted(k for k in knobs if k not in claimed)
    return [f"the manifest's run.knobs of {metrics.platform} set {', '.join(missing)}, "
            f"the run config {claimed or '{}'} in metrics.json lacks {'them' if len(missing) > 1 else 'it'}"] if missing else []
