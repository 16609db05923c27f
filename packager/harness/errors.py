"""The harness's own error types, all subclasses of ``packager.errors``.

``packager.errors`` is a pure module (it imports only ``pathlib``), so the image
carries it beside ``packager.results``; subclassing it means the harness's exit
codes (1 check failed, 2 bad input, 3 environment missing) agree with the CLI's.
"""

from __future__ import annotations

from pathlib import Path

from packager.errors import BadInput, CheckFailed, EnvironmentMissing


class DatasetError(BadInput):
    """The dataset directory, its labels file or an image in it is unusable."""


class CorruptImage(DatasetError):
    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"cannot decode image: {reason}", file=path)
        self.reason = reason


class MissingLabel(DatasetError):
    def __init__(self, labels: Path | str, sample_id: str) -> None:
        super().__init__(f"no label for {sample_id!r}", file=labels)
        self.sample_id = sample_id


class ConfigError(BadInput):
    """The harness configuration (JSON from the runner, or CLI arguments) is wrong."""


class ModelMismatch(BadInput):
    """The model file disagrees with the configuration (input shape, layout, classes)."""


class UnsupportedOperator(BadInput):
    """The reference backend has no implementation for an operator of the model."""


class BackendUnavailable(EnvironmentMissing):
    """The framework a backend needs is not importable in this environment."""


class OutputMismatch(CheckFailed):
    """Outputs differ from the reference outputs beyond the tolerance; lists the ids."""

    def __init__(self, message: str, ids: list[str]) -> None:
        super().__init__(message)
        self.ids = ids
