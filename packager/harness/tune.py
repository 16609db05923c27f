"""``python -m packager.harness.tune``: tune the TVM build with MetaSchedule, inside the image.

The tuning runs where the evaluation runs (the artifact's own image, in the
runner's sandbox, ``request-pack tune``), so the schedules are measured on the
machine they are for. It writes one file, the tuning database
(``packager/harness/tuningdb.py``: MetaSchedule's JSON database and how and
where it was made), to ``--out``.

Measurements happen in this process (builder and runner below), not in TVM's
default pool of forked workers: those need ``cloudpickle`` and ``psutil``, which
the image does not carry, and a fork per candidate costs more than the candidate
on a small CPU. The cost model is MetaSchedule's ``random`` one (XGBoost is not
in the image): the search is evolutionary with random ranking, which finds fewer
good candidates per trial than with XGBoost; the file records it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from packager.errors import RequestPackError
from packager.harness.errors import ConfigError
from packager.harness.tuningdb import (
    COST_MODEL,
    DB_FORMAT,
    DB_NAME,
    first_line,
    machine,
    with_cores,
    write_database,
)

log = logging.getLogger(__name__)

# --- tuning -------------------------------------------------------------------------------------


def _in_process(scratch: Path):
    """A MetaSchedule builder and runner that build and time candidates in this process."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import (
        LocalRunnerFuture,
        default_alloc_argument,
        default_run_evaluator,
    )

    @derived_object
    class Builder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for b in build_inputs:
                try:
                    path = Path(tempfile.mkdtemp(dir=scratch)) / "candidate.so"
                    default_build(b.mod, b.target, None).export_library(str(path))
                    results.append(BuilderResult(str(path), None))
                except Exception as e:  # a candidate that does not compile is a failed trial
                    results.append(BuilderResult(None, f"build: {first_line(e)}"))
            return results

    @derived_object
    class Runner(PyRunner):
        def __init__(self) -> None:
            super().__init__()
            # TVM's LocalRunner defaults, with the CPU cache flushed between repeats as MetaSchedule
            # advises for CPU targets (a warm cache flatters small kernels).
            self.config = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40, enable_cpu_cache_flush=True)

        def run(self, runner_inputs):
            futures = []
            for r in runner_inputs:
                try:
                    mod = tvm.runtime.load_module(str(r.artifact_path))
                    dev = tvm.runtime.device(str(r.device_type), 0)
                    args = default_alloc_argument(dev, tuple(a.as_json() for a in r.args_info), 1)
                    futures.append(LocalRunnerFuture(res=default_run_evaluator(mod, dev, self.config, args)))
                except Exception as e:
                    futures.append(LocalRunnerFuture(error_message=f"run: {first_line(e)}"))
            return futures

    return Builder(), Runner()


def _fused(mod, target):
    """The module as ``compile_relax`` sees it when it applies the database: operators legalised to
    TIR and fused (the same passes in the same order). Extracting tasks from the imported module
    instead finds only the few PrimFuncs the ONNX importer wrote itself (pads, clips), not one conv:
    the workloads would never match what is compiled."""
    import tvm
    from tvm import relax
    from tvm.relax import pipeline

    try:
        dispatch = pipeline.library_dispatch_passes(target)
    except (ValueError, AttributeError):  # as compile_relax: targets without a dispatcher
        dispatch = []
    passes = [*dispatch, relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


def frozen_frames_known() -> None:
    """Tell ``inspect`` which module a frame of the frozen import machinery belongs to.

    MetaSchedule's first task imports ``tvm.s_tir.tensor_intrin``, whose ~250 TVMScript functions each call
    ``inspect.stack()`` while being imported. For every frame named ``<frozen importlib._bootstrap>`` (there are
    several in any import) ``inspect.getmodule`` finds no file and rescans all of ``sys.modules`` (about 2,000 once
    TVM is loaded): 40 million ``hasattr`` calls, 30-60 s of the tiny net's 96 s tuning on an idle 2-core host
    (cProfile). Those frames are the frozen ``importlib._bootstrap`` modules, present in ``sys.modules``: naming
    them in ``inspect``'s file cache is the answer its scan would give if frozen modules had a ``__file__``."""
    import inspect

    for name in ("importlib._bootstrap", "importlib._bootstrap_external"):
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if spec is not None and spec.origin == "frozen":
            inspect.modulesbyfile.setdefault(f"<frozen {name}>", name)


def tune(model_path: Path, input_name: str, input_shape: tuple, target: str | dict, batch_sizes: tuple[int, ...],
         trials: int, seed: int, scratch: Path) -> dict[str, Any]:
    """Tune every batch size's module; return the database document (module doc)."""
    frozen_frames_known()
    import tvm
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from packager.harness.backends.tvm import import_model, make_target

    # MetaSchedule's C++ side asks this global for the core count, and its Python answer needs
    # psutil, which the image does not carry: the sandbox's own count (its CPU affinity) instead.
    cores = machine()["cores"]
    tgt = make_target(with_cores(target, cores))
    data = Path(model_path).read_bytes()
    tvm_ffi.register_global_func("s_tir.meta_schedule.cpu_count", lambda logical=True: cores, override=True)
    work = scratch / "work"
    started = time.monotonic()
    builder, runner = _in_process(scratch)
    for batch in batch_sizes:
        mod = _fused(import_model(Path(model_path), input_name, input_shape, batch), tgt)
        tasks = ms.relax_integration.extract_tasks(mod, tgt)
        log.info("tune: batch %d, %d tasks, %d trials, seed %d, target %s", batch, len(tasks), trials, seed, tgt)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, str(work), num_threads=cores, seed=seed)
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=str(work), max_trials_global=trials,
            # MetaSchedule's scheduler gives every task one round first: rounds small enough that a
            # small budget reaches every task (EfficientNet-Lite0 has about 60), at most its default 64.
            num_trials_per_iter=max(2, min(64, trials // max(1, len(contexts)))), builder=builder, runner=runner,
            cost_model=ms.cost_model.RandomModel(seed=seed))
    pruned = scratch / "pruned"
    pruned.mkdir()
    best = ms.database.JSONDatabase(work_dir=str(pruned))
    ms.database.JSONDatabase(work_dir=str(work), allow_missing=False).dump_pruned(best)
    workloads = [json.loads(line) for line in (pruned / "database_workload.json").read_text().splitlines() if line]
    records = [json.loads(line) for line in (pruned / "database_tuning_record.json").read_text().splitlines() if line]
    return {
        "format": DB_FORMAT, "tvm": str(tvm.__version__), "target": str(tgt),
        "model_sha256": hashlib.sha256(data).hexdigest(), "batch_sizes": list(batch_sizes), "trials": trials,
        "seed": seed, "cost_model": COST_MODEL, "tuning_seconds": round(time.monotonic() - started, 1),
        "tuned_on": machine(), "workloads": workloads, "records": records,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m packager.harness.tune", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, required=True, help="JSON with the manifest's sections (model, framework, run)")
    p.add_argument("--model", type=Path, required=True, help="ONNX model file")
    p.add_argument("--out", type=Path, required=True, help=f"output directory; the database is written there as {DB_NAME}")
    p.add_argument("--trials", type=int, required=True, help="MetaSchedule trials per batch size (max_trials_global)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--target", help="TVM target as a string or JSON object (default: the manifest's framework.options.target)")
    p.add_argument("--batch-sizes", help="comma-separated (default: the manifest's run.batch_sizes)")
    p.add_argument("--scratch", type=Path, help="where candidates are built (default: the system's temporary directory)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from packager.harness.config import load_config_file

    try:
        if args.trials < 1 or args.seed < 0:
            raise ConfigError("--trials must be >= 1 and --seed >= 0", field="--trials/--seed")
        data = load_config_file(args.config)
        fw = data.get("framework") or {}
        if fw.get("name") != "tvm":
            raise ConfigError(f"framework is {fw.get('name')!r}: only a tvm build can be tuned", file=args.config, field="framework.name")
        target = args.target or (fw.get("options") or {}).get("target") or "llvm"
        if isinstance(target, str) and target.lstrip().startswith("{"):
            target = json.loads(target)
        inp = (data.get("model") or {}).get("input") or {}
        batches = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else \
            tuple((data.get("run") or {}).get("batch_sizes") or (1,))
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="request-pack-tune-", dir=args.scratch) as scratch:
            doc = tune(args.model, inp.get("name") or "input", tuple(inp.get("shape") or ()), target, batches,
                       args.trials, args.seed, Path(scratch))
        sha = write_database(doc, args.out / DB_NAME)
    except RequestPackError as e:
        log.error("%s", e)
        return e.return_code
    sys.stdout.write(f"{DB_NAME} sha256:{sha} ({len(doc['records'])} records, {doc['tuning_seconds']} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
