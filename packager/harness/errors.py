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


class NoSpace(EnvironmentMissing):
    """A directory the run writes to (the tensor cache, the outputs) has no room for what is left.

    One line naming the directory, the bytes still needed and the bytes free, never a raw
    ``OSError`` from a worker process (ENOSPC surfaced as "150528 requested and 50144 written")."""

    def __init__(self, path: Path | str, needed: int, free: int) -> None:
        super().__init__(f"{path}: no room: needs about {_size(needed)}, {_size(free)} free",
                         fix="free space there, or point the cache elsewhere (REQUEST_PACK_CACHE)")
        self.path, self.needed, self.free = str(path), needed, free


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class OutputMismatch(CheckFailed):
    """Outputs differ from the reference outputs beyond the tolerance; lists the ids."""

    def __init__(self, message: str, ids: list[str]) -> None:
        super().__init__(message)
        self.ids = ids
