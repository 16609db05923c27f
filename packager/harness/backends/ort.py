"""onnxruntime backend: CPU by default; CUDA/TensorRT providers are used when present."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from packager.harness.backends.base import Backend, BackendOptions, InputInfo
from packager.harness.errors import BackendUnavailable, ModelMismatch

log = logging.getLogger(__name__)

# Preference order when the manifest names no providers: accelerators first, CPU always last.
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# The run config's graph optimisation level 0-3, by onnxruntime's names.
_OPT_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self) -> None:
        try:
            import onnxruntime
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not importable: {e}", fix="use the 'reference' backend or install onnxruntime") from None
        self._ort = onnxruntime
        self._session = None
        self._threads: int | None = None

    @property
    def version(self) -> str:
        return self._ort.__version__

    def load(self, model_path: Path, options: BackendOptions) -> None:
        ort = self._ort
        so = ort.SessionOptions()
        level = 3 if options.opt_level is None else min(options.opt_level, 3)
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
        threads = options.threads or len(os.sched_getaffinity(0))
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = options.inter_threads or 1
        if options.inter_threads and options.inter_threads > 1:
            # inter-op threads only run independent nodes side by side in the parallel execution mode.
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        self._threads = threads
        available = ort.get_available_providers()
        if options.execution_providers:
            missing = [p for p in options.execution_providers if p not in available]
            if missing:
                raise BackendUnavailable(f"execution provider(s) {missing} not available (have {available})")
            providers = list(options.execution_providers)
        else:
            providers = [p for p in _PREFERRED if p in available]
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            raise ModelMismatch(f"onnxruntime cannot load the model: {e}", file=model_path) from None
        log.info("onnxruntime %s providers %s threads %d/%d opt %s", self.version, self._session.get_providers(), threads,
                 so.inter_op_num_threads, _OPT_LEVELS[level])
        inp = self._session.get_inputs()[0]
        self._input = InputInfo(inp.name, tuple(inp.shape), inp.type)
        self._output_name = self._session.get_outputs()[0].name

    @property
    def input(self) -> InputInfo:
        return self._input

    @property
    def session(self):
        return self._session

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input.name: batch})[0]

    def threads(self) -> int | None:
        return self._threads

    def describe(self) -> str:
        return f"onnxruntime {self.version} ({','.join(self._session.get_providers())})" if self._session else super().describe()
