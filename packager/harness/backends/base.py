"""One interface for every backend: load a model file, run a batch, say what you are."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BackendOptions:
    """What the manifest's ``framework.options`` can ask of a backend."""

    threads: int | None = None
    inter_threads: int | None = None
    execution_providers: tuple[str, ...] | None = None
    target: str | Mapping[str, Any] | None = None
    opt_level: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


class Backend(abc.ABC):
    """A loaded model. ``run`` takes a float32 batch and returns the float32 output batch."""

    name: str = "abstract"
    # True when each new batch size costs a compilation (tvm): callers pad short batches instead.
    static_batch: bool = False

    @property
    @abc.abstractmethod
    def version(self) -> str: ...

    @abc.abstractmethod
    def load(self, model_path: Path, options: BackendOptions) -> None: ...

    @property
    @abc.abstractmethod
    def input(self) -> InputInfo: ...

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def threads(self) -> int | None:
        """Threads the backend computes with, recorded with every result."""
        return None

    def describe(self) -> str:
        return f"{self.name} {self.version}"
