"""Backends behind one interface; ``create(name)`` picks one by the manifest's framework name."""

from __future__ import annotations

from ..errors import BackendUnavailable, ConfigError
from .base import Backend, BackendOptions, InputInfo

NAMES = ("onnxruntime", "reference", "tvm")


def create(name: str) -> Backend:
    if name == "onnxruntime":
        from .ort import OrtBackend

        return OrtBackend()
    if name == "reference":
        from .reference import ReferenceBackend

        return ReferenceBackend()
    if name == "tvm":
        raise BackendUnavailable("the tvm backend is not implemented in this harness yet", fix="use onnxruntime or reference")
    raise ConfigError(f"unknown backend {name!r} (known: {', '.join(NAMES)})", field="framework.name")


__all__ = ["Backend", "BackendOptions", "InputInfo", "NAMES", "create"]
