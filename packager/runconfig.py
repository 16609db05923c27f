"""Run-time knobs: what a run may change without rebuilding its image.

A run config is a handful of knobs (threads, batch size, graph optimisation
level, execution provider, TVM target) given to ``run``/``evaluate``/``explore``
as ``--set run.KNOB=VALUE`` or a file. It travels to the harness as one JSON
argument (``--run-config``), the harness applies it and records it in
``metrics.json`` (hence in the signed predicate), and the verifier checks that
the runner's command, the metrics and the predicate name the same knobs. Two
results of one image then differ only in what was measured and the knobs they say.

Core and standard library only: the harness imports this module inside images
that carry no pydantic and no YAML parser.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from packager.errors import BadInput

# The harness's argument that carries the run config, as compact JSON.
ARGV_FLAG = "--run-config"
SET_PREFIX = "run."
MAX_THREADS = 1024
MAX_BATCH = 4096
MAX_TEXT = 256

KNOB_HELP = {
    "threads": "intra-op threads (onnxruntime intra_op_num_threads, TVM_NUM_THREADS)",
    "inter_threads": "inter-op threads (onnxruntime inter_op_num_threads; parallel execution mode when > 1)",
    "batch": "the Offline scenario's batch size (replaces run.batch_sizes)",
    "opt_level": "graph optimisation level 0-3 (onnxruntime: disable, basic, extended, all; TVM: PassContext opt_level)",
    "execution_provider": "onnxruntime execution provider, e.g. CPUExecutionProvider",
    "target": "TVM target string, e.g. 'llvm -mcpu=znver2'",
}

# Which knobs each framework applies; any other is refused, naming the knob and the framework.
APPLIES: Mapping[str, frozenset[str]] = {
    "onnxruntime": frozenset({"threads", "inter_threads", "batch", "opt_level", "execution_provider"}),
    "tvm": frozenset({"threads", "batch", "opt_level", "target"}),
    # Pure numpy: numpy's BLAS picks its threads, and there is no graph optimiser to steer.
    "reference": frozenset({"batch"}),
}


@dataclass(frozen=True)
class RunConfig:
    """The knobs a run was asked to use; None means "the manifest's (or the backend's) default"."""

    threads: int | None = None
    inter_threads: int | None = None
    batch: int | None = None
    opt_level: int | None = None
    execution_provider: str | None = None
    target: str | None = None

    def as_dict(self) -> dict[str, int | str]:
        """Only the knobs that were set: the form recorded in metrics.json and the signed predicate."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def canonical(self) -> str:
        """Compact sorted JSON; equal configs give equal bytes (point keys, the harness argument)."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    def __bool__(self) -> bool:
        return bool(self.as_dict())

    def label(self) -> str:
        """``threads=2 batch=32`` for tables and logs; ``defaults`` when nothing was set."""
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items()) or "defaults"

    def merged(self, other: RunConfig) -> RunConfig:
        """This config with every knob ``other`` sets replaced."""
        return RunConfig(**{**self.as_dict(), **other.as_dict()})

    def check_applies(self, framework: str, *, where: str = "run config") -> None:
        """Refuse a knob the framework does not apply: silently ignoring it would mislabel the result."""
        known = APPLIES.get(framework)
        if known is None:
            if self:
                raise BadInput(f"{where}: framework {framework!r} takes no run-time knobs", field="run")
            return
        wrong = sorted(set(self.as_dict()) - known)
        if wrong:
            raise BadInput(f"{where}: knob {wrong[0]!r} does not apply to framework {framework!r} "
                           f"(it applies {', '.join(sorted(known))})", field=f"run.{wrong[0]}")


def _short(value: Any) -> str:
    """A value as an error shows it: a file may hold a megabyte in one."""
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise BadInput(f"run.{name} must be an integer, got {_short(value)}")
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise BadInput(f"run.{name} must be an integer, got {_short(value)}") from None
    if not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"run.{name} must be an integer from {low} to {high}, got {_short(value)}")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT or not value.isprintable():
        raise BadInput(f"run.{name} must be printable text of 1-{MAX_TEXT} characters, got {_short(value)}")
    return value.strip()


_CHECKS = {
    "threads": lambda v: _int("threads", v, 1, MAX_THREADS),
    "inter_threads": lambda v: _int("inter_threads", v, 1, MAX_THREADS),
    "batch": lambda v: _int("batch", v, 1, MAX_BATCH),
    "opt_level": lambda v: _int("opt_level", v, 0, 3),
    "execution_provider": lambda v: _text("execution_provider", v),
    "target": lambda v: _text("target", v),
}


def from_mapping(data: Any, *, where: str = "run config") -> RunConfig:
    """A run config from a mapping of knob names to values; unknown knobs name the close ones."""
    if data is None:
        return RunConfig()
    if not isinstance(data, Mapping):
        raise BadInput(f"{where} must be a mapping of knob: value, got {type(data).__name__}", field="run")
    values = {}
    for key, value in data.items():
        name = str(key).removeprefix(SET_PREFIX)
        if name not in _CHECKS:
            import difflib

            close = difflib.get_close_matches(name, _CHECKS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(_CHECKS)})"
            raise BadInput(f"{where}: unknown knob {_short(name)}{hint}", field=f"run.{name[:80]}")
        if value is not None:
            try:
                values[name] = _CHECKS[name](value)
            except BadInput as e:  # name the file (or --set) the value came from
                raise BadInput(f"{where}: {e.message}") from None
    return RunConfig(**values)


def from_json(text: str, *, where: str = ARGV_FLAG) -> RunConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}: not JSON: {e}", field="run") from None
    return from_mapping(data, where=where)


def from_sets(items: list[str] | tuple[str, ...]) -> RunConfig:
    """``--set run.threads=2 --set run.batch=32``: each item KEY=VALUE, keys under ``run.``."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set {item!r}: expected run.KNOB=VALUE", field="--set")
        key = key.strip()
        if not key.startswith(SET_PREFIX):
            raise BadInput(f"--set {item!r}: only run-time knobs (run.KNOB) can be set here; build-time changes are "
                           "`request-pack derive`", field="--set")
        values[key] = value.strip()
    return from_mapping(values, where="--set")


def describe_knobs() -> str:
    return "; ".join(f"run.{k}: {v}" for k, v in KNOB_HELP.items())
