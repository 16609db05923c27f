"""The harness's configuration: the manifest's sections as JSON from the runner, plus CLI overrides.

The harness runs inside the image and does not import ``packager.manifest``
(that would drag pydantic models of the whole chain into every image). The
runner passes ``manifest.model_dump(mode="json")`` (or any subset holding the
sections below) as a JSON file; this module reads only the keys it needs and
rejects unknown keys inside those sections, so a typo is an error, not a default.

Sections read: ``name``, ``model`` (``input``, ``output``, ``num_classes``,
``label_offset``), ``framework`` (``name``, ``options``), ``dataset``,
``preprocessing``, ``run``, ``target``, ``expectations`` (``reference_outputs``).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.errors import RequestPackError
from packager.harness.backends.base import BackendOptions
from packager.harness.dataset import DatasetSpec
from packager.harness.errors import ConfigError
from packager.harness.preprocess import PreprocessParams
from packager.runconfig import RunConfig, from_mapping

# The run modes, and what MLPerf's mlperf.conf (v6.1) asks of resnet50's performance sample count.
# Here and not in scenarios.py: this module is imported by the entry point (--help included), which
# must run in any image, also one without pydantic, which scenarios' result models need.
MODES = ("quick", "submission")
SCENARIOS = ("SingleStream", "MultiStream", "Offline")
SUBMISSION_PERFORMANCE_SAMPLES = 1024

_SECTION_KEYS = {
    "run": {"scenarios", "batch_sizes", "warmup", "stages", "min_duration_s", "knobs"},
    "framework": {"name", "version", "options"},
    "framework.options": {"threads", "target", "opt_level", "execution_providers", "tuning_log"},
    "dataset": {"layout", "labels", "images", "synsets", "note"},
    "target": {"name", "price_usd", "power_probe", "power_command"},
}

_MACHINE_TO_PLATFORM = {"x86_64": "linux/amd64", "aarch64": "linux/arm64", "armv7l": "linux/arm/v7", "armv8l": "linux/arm/v7"}


@dataclass(frozen=True)
class HarnessConfig:
    model_path: Path
    dataset: DatasetSpec
    preprocessing: PreprocessParams
    out_dir: Path
    cache_dir: Path
    backend: str = "onnxruntime"
    backend_options: BackendOptions = BackendOptions()
    artifact: str = "unnamed"
    stage: str = "functional"
    platform: str = field(default_factory=lambda: _MACHINE_TO_PLATFORM.get(_platform.machine(), _platform.machine()))
    samples: int | None = None
    ids: tuple[str, ...] | None = None
    scenarios: tuple[str, ...] = ("SingleStream", "Offline")
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 10
    min_duration_s: float = 0.0
    single_stream_queries: int = 256
    offline_min_samples: int = 512
    # Quick mode's MultiStream query count: 662 is mlperf.conf's *.MultiStream.min_query_count, the fewest
    # queries LoadGen's early-stopping estimate of the p99 needs.
    multistream_queries: int = 662
    performance_samples: int = 256
    min_top1: float = 0.0
    input_name: str | None = None
    input_shape: tuple[int | str, ...] | None = None
    input_layout: str | None = None
    num_classes: int = 1000
    label_offset: int = 0
    resume: bool = False
    driver: str = "auto"
    image_digest: str | None = None
    price_usd: float | None = None
    power_probe: str = "none"
    power_command: str | None = None
    reference_outputs: Path | None = None
    atol: float = 1e-3
    save_outputs: bool = False
    input_hash_sample: int = 32
    workers: int | None = None
    # quick | submission (see packager/harness/scenarios.py); recorded in metrics.json's measurement.
    mode: str = "quick"
    # Told by the runner: a foreign platform under QEMU. The harness cannot see QEMU user mode itself.
    execution: str = "native"
    # Why the performance scenarios do not run (None: they do); the runner skips them under emulation.
    performance_skipped: str | None = None
    user_conf_overrides: tuple[str, ...] = ()
    # The run-time knobs the runner asked for (packager/runconfig.py); applied below, recorded in metrics.json.
    run_config: RunConfig = RunConfig()


def _check_keys(section: str, data: Any) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{section} must be a mapping, got {type(data).__name__}", field=section)
    unknown = sorted(set(data) - _SECTION_KEYS[section]) if section in _SECTION_KEYS else []
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}", field=section)
    return data


def load_config_file(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror or e}", file=path) from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"not JSON: {e}", file=path) from None
    if not isinstance(data, dict):
        raise ConfigError("top level must be an object", file=path)
    return data


def build_config(data: dict, **overrides: Any) -> HarnessConfig:
    """Merge the runner's JSON (manifest sections) with CLI overrides (None means 'not given')."""
    o = {k: v for k, v in overrides.items() if v is not None}
    for required in ("model_path", "dataset_dir", "out_dir", "cache_dir"):
        if required not in o:
            raise ConfigError(f"{required.replace('_', '-')} is required", field=required)
    pre = data.get("preprocessing")
    if not isinstance(pre, dict):
        raise ConfigError("the config has no 'preprocessing' section", field="preprocessing")
    params = PreprocessParams.from_mapping(pre)
    ds = _check_keys("dataset", data.get("dataset"))
    dataset = DatasetSpec(
        root=Path(o.pop("dataset_dir")),
        layout=o.pop("layout", None) or ds.get("layout", "labels-tsv"),
        labels=ds.get("labels", "labels.tsv"),
        images=ds.get("images", "images"),
        synsets=ds.get("synsets"),
        note=ds.get("note"),
    )
    fw = _check_keys("framework", data.get("framework"))
    opts = _check_keys("framework.options", fw.get("options"))
    eps = opts.get("execution_providers")
    # the platform's run.knobs (request.json is the platform's view), each replaced by a knob the run was given
    run = _check_keys("run", data.get("run"))
    try:
        knobs = from_mapping(run.get("knobs"), where="run.knobs").merged(o.pop("run_config", None) or RunConfig())
    except RequestPackError as e:
        raise ConfigError(e.message) from None
    backend_name = o.get("backend") or fw.get("name", "onnxruntime")
    try:
        knobs.check_applies(backend_name, where="--run-config")
    except RequestPackError as e:
        raise ConfigError(e.message) from None
    if knobs.execution_provider:
        # The asked-for provider first, the CPU as onnxruntime's fallback for what it cannot place.
        eps = list(dict.fromkeys([knobs.execution_provider, "CPUExecutionProvider"]))
    backend_options = BackendOptions(
        threads=knobs.threads or o.pop("threads", None) or opts.get("threads"),
        inter_threads=knobs.inter_threads,
        execution_providers=tuple(eps) if eps else None,
        target=knobs.target or opts.get("target"),
        opt_level=knobs.opt_level if knobs.opt_level is not None else opts.get("opt_level"),
        extra={"tuning_log": opts["tuning_log"]} if opts.get("tuning_log") else {},
    )
    o.pop("threads", None)
    if knobs.batch:
        o["batch_sizes"] = (knobs.batch,)
    stage = o.pop("stage", "functional")
    if stage not in ("functional", "full"):
        raise ConfigError(f"stage {stage!r} is not 'functional' or 'full'", field="stage")
    stage_cfg = (run.get("stages") or {}).get(stage) or {}
    model = data.get("model") or {}
    inp = model.get("input") or {}
    target = _check_keys("target", data.get("target"))
    ref = ((data.get("expectations") or {}).get("reference_outputs")) or {}
    cfg: dict[str, Any] = dict(
        model_path=Path(o.pop("model_path")),
        dataset=dataset,
        preprocessing=params,
        out_dir=Path(o.pop("out_dir")),
        cache_dir=Path(o.pop("cache_dir")),
        backend=o.pop("backend", None) or fw.get("name", "onnxruntime"),
        backend_options=backend_options,
        artifact=data.get("name", "unnamed"),
        stage=stage,
        samples=o.pop("samples", None) or stage_cfg.get("samples"),
        scenarios=tuple(o.pop("scenarios", None) or run.get("scenarios") or ("SingleStream", "Offline")),
        batch_sizes=tuple(o.pop("batch_sizes", None) or run.get("batch_sizes") or (1,)),
        warmup=int(o.pop("warmup", run.get("warmup", 10))),
        min_duration_s=float(o.pop("min_duration_s", run.get("min_duration_s", 0.0))),
        min_top1=float(stage_cfg.get("min_top1", 0.0)),
        input_name=inp.get("name"),
        input_shape=tuple(inp["shape"]) if inp.get("shape") else None,
        input_layout=inp.get("layout"),
        num_classes=int(model.get("num_classes", 1000)),
        label_offset=int(model.get("label_offset", 0)),
        price_usd=target.get("price_usd"),
        power_probe=o.pop("power_probe", None) or target.get("power_probe", "none"),
        power_command=target.get("power_command"),
        atol=float(o.pop("atol", ref.get("atol", 1e-3))),
    )
    if "ids" in o:
        cfg["ids"] = tuple(o.pop("ids"))
    cfg["run_config"] = knobs
    cfg.update(o)  # the rest map one to one onto HarnessConfig fields
    unknown = sorted(set(cfg) - set(HarnessConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}")
    bad = [s for s in cfg["scenarios"] if s not in SCENARIOS]
    if bad:
        raise ConfigError(f"unknown scenario(s) {bad} (known: {', '.join(SCENARIOS)})", field="run.scenarios")
    if "MultiStream" in cfg["scenarios"] and cfg.get("driver") == "builtin":
        raise ConfigError("MultiStream needs MLPerf LoadGen (its per-query records and early-stopping estimate); "
                          "--driver builtin runs SingleStream and Offline only", field="--driver")
    if any(int(b) < 1 for b in cfg["batch_sizes"]):
        raise ConfigError("batch sizes must be >= 1", field="run.batch_sizes")
    _check_mode(cfg)
    return HarnessConfig(**cfg)


def _check_mode(cfg: dict[str, Any]) -> None:
    """Mode, execution and the skipped scenarios; submission mode takes LoadGen's settings, not ours."""
    mode = cfg.setdefault("mode", "quick")
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}", field="--mode")
    if cfg.setdefault("execution", "native") not in ("native", "emulated"):
        raise ConfigError(f"execution {cfg['execution']!r} is not native or emulated", field="--execution")
    if cfg.get("performance_skipped"):
        cfg["scenarios"] = ()
    if cfg.get("user_conf_overrides") and mode != "submission":
        raise ConfigError("--user-conf-override only applies to submission mode", field="--user-conf-override")
    cfg["user_conf_overrides"] = tuple(cfg.get("user_conf_overrides") or ())
    if mode != "submission":
        return
    if cfg.get("samples") is not None or cfg.get("ids") is not None:
        # MLPerf's accuracy run covers the whole data set; a subset is a quick run.
        raise ConfigError("submission mode evaluates the whole data set: drop --samples/--ids (or the stage's "
                          "samples), or use --mode quick", field="--samples")
    if cfg.get("driver") == "builtin":
        raise ConfigError("submission mode needs MLPerf LoadGen; --driver builtin is for quick mode", field="--driver")
    cfg["performance_samples"] = SUBMISSION_PERFORMANCE_SAMPLES
