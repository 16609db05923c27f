"""Apache TVM backend: the ONNX model imported into Relax, compiled for a target, cached.

TVM compiles for static shapes, so each batch size the harness asks for is
compiled on first use (outside every timed region: scenarios warm up first)
and the compiled library is cached as a shared object under
``<cache>/tvm/<key>.so``, the key being the sha256 of the model bytes, the
target string, the batch size, the opt level, the TVM version and the tuning
database's sha256.

Tuned: ``framework.options.tuning_log`` names a MetaSchedule tuning database
(``packager/harness/tune.py``; relative paths are resolved against the model
file's directory, which in the image is where the build puts both). It is
checked against this model, target and TVM version before use, and compiled in
with MetaSchedule's own Relax pipeline (``compile_relax``: fuse, apply the
database, lower), so the tuned schedules replace Relax's default ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from packager.harness.backends.base import Backend, BackendOptions, InputInfo
from packager.harness.errors import BackendUnavailable, ConfigError, ModelMismatch

log = logging.getLogger(__name__)


class TvmBackend(Backend):
    name = "tvm"
    static_batch = True

    def __init__(self, cache_dir: Path | None = None) -> None:
        try:
            import tvm
            from tvm import relax  # noqa: F401
            from tvm.relax.frontend.onnx import from_onnx  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(f"apache-tvm is not importable: {e}", fix="pip install apache-tvm, or use onnxruntime/reference") from None
        self._tvm = tvm
        self._cache_dir = cache_dir
        self._vms: dict[int, object] = {}

    @property
    def version(self) -> str:
        return str(self._tvm.__version__)

    def load(self, model_path: Path, options: BackendOptions) -> None:
        import onnx

        self._path = Path(model_path)
        data = self._path.read_bytes()
        self._model_sha = hashlib.sha256(data).hexdigest()
        try:
            self._onnx = onnx.load_from_string(data)
        except Exception as e:
            raise ModelMismatch(f"cannot parse ONNX model: {e}", file=model_path) from None
        self._target = make_target(options.target or "llvm")
        self._db = None
        if options.extra.get("tuning_log"):
            from packager.harness.tuningdb import read_database

            db_path = self._path.parent / str(options.extra["tuning_log"])
            self._db = read_database(db_path, tvm_version=self.version, target=str(self._target),
                                     model_sha256=self._model_sha)
            log.info("tvm: %s", self._db.describe())
        self._opt_level = 3 if options.opt_level is None else options.opt_level
        self._threads = options.threads
        if options.threads:
            # TVM's runtime pool reads TVM_NUM_THREADS when it first starts; set it before any run.
            os.environ["TVM_NUM_THREADS"] = str(options.threads)
        inits = {t.name for t in self._onnx.graph.initializer}
        inp = next(i for i in self._onnx.graph.input if i.name not in inits)
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in inp.type.tensor_type.shape.dim)
        self._input = InputInfo(inp.name, dims, "tensor(float)")
        self._cache = Path(self._cache_dir) if self._cache_dir else None

    @property
    def input(self) -> InputInfo:
        return self._input

    def describe(self) -> str:
        # metrics.json's framework: the signed bundle names the database and where it was tuned
        return f"{super().describe()}, {self._db.describe() if self._db else 'untuned'}"

    def _key(self, batch: int) -> str:
        text = json.dumps([self._model_sha, str(self._target), batch, self._opt_level, self.version,
                           self._db.sha256 if self._db else None])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _vm(self, batch: int):
        vm = self._vms.get(batch)
        if vm is not None:
            return vm
        tvm = self._tvm
        from tvm import relax

        so_path = self._cache / "tvm" / f"{self._key(batch)}.so" if self._cache else None
        if so_path is None or not so_path.is_file():
            lib_path = self._compile(batch, so_path)
        else:
            log.info("tvm: compiled module for batch %d from %s", batch, so_path)
            lib_path = so_path
        lib = tvm.runtime.load_module(str(lib_path))
        vm = relax.VirtualMachine(lib, tvm.cpu())
        self._vms[batch] = vm
        return vm

    def _compile(self, batch: int, so_path: Path | None) -> Path:
        tvm = self._tvm
        log.info("tvm: compiling %s for %s at batch %d (opt level %d, %s)", self._path.name, self._target, batch,
                 self._opt_level, "tuned" if self._db else "untuned")
        try:
            mod = import_model(self._path, self._input.name, self._input.shape, batch)
            if self._db is not None:
                from tvm.s_tir.meta_schedule.relax_integration import compile_relax

                with tempfile.TemporaryDirectory(prefix="request-pack-tvm-db-") as work:
                    ex = compile_relax(self._db.open(Path(work)), mod, self._target, params=None)
            else:
                with tvm.transform.PassContext(opt_level=self._opt_level):
                    ex = tvm.compile(mod, target=self._target)
        except ConfigError:
            raise
        except Exception as e:  # TVM raises its own TVMError and friends
            raise ModelMismatch(f"tvm cannot compile the model: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=self._path) from None
        if so_path is None:
            so_path = Path(tempfile.mkdtemp(prefix="request-pack-tvm-")) / "model.so"
        so_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = so_path.with_suffix(f".{os.getpid()}.tmp.so")
        ex.export_library(str(tmp))
        os.replace(tmp, so_path)
        return so_path

    def run(self, batch: np.ndarray) -> np.ndarray:
        tvm = self._tvm
        vm = self._vm(int(batch.shape[0]))
        dev = tvm.cpu()
        make = getattr(tvm.runtime, "tensor", None) or tvm.nd.array
        out = vm["main"](make(np.ascontiguousarray(batch, dtype=np.float32), dev))
        if not hasattr(out, "numpy"):
            out = out[0]  # a tuple of outputs: the first is the classifier's
        return out.numpy()

    def threads(self) -> int | None:
        return self._threads


def make_target(target: str | dict):
    """A TVM Target from the manifest's form (a string, or an object of target attributes)."""
    import tvm

    return tvm.target.Target(json.dumps(target) if isinstance(target, dict) else target)


def import_model(path: Path, input_name: str, input_shape: tuple, batch: int):
    """The ONNX file as a Relax module at a static batch size: what is compiled, and what is tuned."""
    from tvm.relax.frontend.onnx import from_onnx

    from packager.harness.backends.reference import fold_constants

    shape = [batch] + [d if isinstance(d, int) else 1 for d in tuple(input_shape)[1:]]
    # Relax's importer wants static pads; PyTorch exports of 'same' padding compute them from Shape.
    folded = fold_constants(Path(path), tuple(shape))
    return from_onnx(folded, shape_dict={input_name: shape}, keep_params_in_input=False)
