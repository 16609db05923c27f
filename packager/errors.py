"""One exception hierarchy; each class owns its exit code.

Library code raises these; only ``packager.cli`` catches them, prints one line
and exits with ``return_code``. Nothing below the CLI calls ``sys.exit``.
"""

from __future__ import annotations

from pathlib import Path


class RequestPackError(Exception):
    """Base of every error the CLI turns into a one-line message."""

    return_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- exit code 1: a check ran and failed -------------------------------------


class CheckFailed(RequestPackError):
    """A verification or comparison ran and did not pass."""

    return_code = 1


class IntegrityError(CheckFailed):
    """A file's bytes do not match the sha256 it is pinned to."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: sha256 mismatch: expected {expected}, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


class StaleLockError(CheckFailed):
    """``--frozen`` was asked for and the lock does not match the manifest."""


# --- exit code 2: the user gave us something we cannot use --------------------


class BadInput(RequestPackError):
    """Input the user controls is malformed; the message names file and field."""

    return_code = 2

    def __init__(self, message: str, *, file: Path | str | None = None, field: str | None = None) -> None:
        parts = []
        if file is not None:
            parts.append(str(file))
        if field:
            parts.append(field)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.file = file
        self.field = field


class ManifestError(BadInput):
    """request.yaml is malformed or violates the schema."""


class LockFileError(BadInput):
    """request.lock is missing or malformed."""


class UnpinnedInputError(BadInput):
    """An input has no exact version or hash and so cannot be locked."""


class UnsupportedPlatformError(BadInput):
    """A dependency has no artifact for a platform the manifest lists."""


# --- exit code 3: the machine lacks something ---------------------------------


class EnvironmentMissing(RequestPackError):
    """A tool, daemon, device or emulator the command needs is absent."""

    return_code = 3

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{message} (fix: {fix})" if fix else message)
        self.fix = fix


class ToolMissing(EnvironmentMissing):
    """A required executable is not on PATH."""


class NetworkUnavailable(EnvironmentMissing):
    """An input had to be fetched and the source could not be reached."""
