"""Backends behind one interface; ``create(name)`` picks one by the manifest's framework name."""

from __future__ import annotations

from pathlib import Path

from packager.harness.backends.base import Backend, BackendOptions, InputInfo
from packager.harness.errors import ConfigError

NAMES = ("onnxruntime", "reference", "tvm")


def create(name: str, *, cache_dir: Path | None = None) -> Backend:
    """A backend by name; ``cache_dir`` holds compiled modules for backends that compile (tvm)."""
    if name == "onnxruntime":
        from packager.harness.backends.ort import OrtBackend

        return OrtBackend()
    if name == "reference":
        from packager.harness.backends.reference import ReferenceBackend

        return ReferenceBackend()
    if name == "tvm":
        from packager.harness.backends.tvm import TvmBackend

        return TvmBackend(cache_dir)
    raise ConfigError(f"unknown backend {name!r} (known: {', '.join(NAMES)})", field="framework.name")


__all__ = ["Backend", "BackendOptions", "InputInfo", "NAMES", "create"]
