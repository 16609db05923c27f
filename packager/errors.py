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


class ReproductionMismatch(IntegrityError):
    """A conversion recipe ran and its output differs from the pinned sha256; ``hint`` says why it may."""

    def __init__(self, what: str, expected: str, actual: str, *, hint: str) -> None:
        super().__init__(what, expected, actual)
        self.hint = hint
        self.message = f"{self.message}; {hint}"


class CacheMissError(CheckFailed):
    """A locked file is not in the content-addressed cache (run ``request-pack fetch``)."""


# --- exit codes 10-19: one per class of bundle verification failure ------------
# ``request-pack verify`` exits with the code of the lowest-numbered check that
# failed, so scripts can tell a forged signature from a tampered file:
#   10 EnvelopeError        envelope missing, truncated, not JSON, wrong payloadType
#   11 SignatureError       no signature over the PAE by a trusted key
#   12 SubjectMismatch      a file differs from its subject digest, or a file/subject is extra or missing
#   13 ImageDigestMismatch  statement, build record, provenance (and local build) name different images
#   14 MetricsMismatch      top-1/top-5 or counts recomputed from predictions + labels differ from the claim
#   15 SchemaError          a JSON/YAML file of the bundle violates its schema
#   16 UnsafeArchive        hostile or broken .tar.gz (absolute path, .., link, device, too big, truncated, not gzip)


class BundleCheckFailed(CheckFailed):
    """A numbered check of ``verify`` failed; ``report`` holds every check's outcome when known."""

    return_code = 1
    check: int = 0

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.report: object | None = None


class EnvelopeError(BundleCheckFailed):
    return_code = 10
    check = 1


class SignatureError(BundleCheckFailed):
    return_code = 11
    check = 1


class SubjectMismatch(BundleCheckFailed):
    return_code = 12
    check = 2


class ImageDigestMismatch(BundleCheckFailed):
    return_code = 13
    check = 3


class MetricsMismatch(BundleCheckFailed):
    return_code = 14
    check = 4


class SchemaError(BundleCheckFailed):
    return_code = 15
    check = 5


class UnsafeArchive(BundleCheckFailed):
    return_code = 16
    check = 0


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


class NoWheelError(UnsupportedPlatformError):
    """A top-level requirement (``requirement``, its canonical name) has no wheel for a platform."""

    def __init__(self, message: str, *, requirement: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.requirement = requirement


class KeyFileError(BadInput):
    """A signing or trusted key is unreadable, not Ed25519, or its passphrase is wrong."""


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


class DownloadFailed(NetworkUnavailable):
    """Every location of a locked file failed; the message names the entry and each location with its reason.

    Transient failures (DNS, reset, 5xx) were retried first; a 404 or a hash
    mismatch moved on to the next location at once.
    """

    def __init__(self, what: str, tried: list[tuple[str, str]], *, fix: str | None = None) -> None:
        detail = "; ".join(f"{url}: {reason}" for url, reason in tried) or "no location recorded"
        super().__init__(f"{what}: cannot download from any location ({detail})", fix=fix)
        self.what = what
        self.tried = tried


class RecipeEnvironmentMismatch(EnvironmentMissing):
    """The installed tools differ from the versions a conversion recipe pins."""


# --- runner (packager/runner.py, devices.py, engine/) ------------------------------


class DeviceMissing(EnvironmentMissing):
    """A device the manifest or --device requires is absent; raised before any container starts."""


class EngineUnavailable(EnvironmentMissing):
    """The container engine (local daemon, podman, or the remote over ssh) cannot be reached."""


class ImageNotAvailable(EnvironmentMissing):
    """The artifact's image is neither in the engine nor in build/<name>/ (run ``request-pack build``)."""


class ImageMismatch(CheckFailed):
    """The image the engine holds is not the one the build record pins (config digest or platform differ)."""


class StageFailed(CheckFailed):
    """A run stage finished but did not pass: the container failed, or top-1 is below the manifest's minimum."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"stage {stage!r} failed: {reason}")
        self.stage = stage
        self.reason = reason


# --- build (packager/build.py, rootfs.py, oci.py, engine/) -----------------------------


class BuildFailed(CheckFailed):
    """A build step ran and failed: mmdebstrap, a layer, or the engine refusing the image."""


class NotReproducible(CheckFailed):
    """Two builds of the same lock gave different digests; the message names the first differing layer and file."""


class TemplateError(BadInput):
    """A Dockerfile template in dockerfiles/ does not render; the message names the template and line."""


class EmulationMissing(EnvironmentMissing):
    """A foreign platform was requested and its QEMU binfmt entry is absent or disabled."""


# --- nix (packager/nix.py) -------------------------------------------------------------


class NixInputMismatch(IntegrityError):
    """A pinned input of a Nix expression does not have the bytes its sha256 says; ``input`` names it."""

    def __init__(self, input: str, path: str, expected: str, actual: str, *, hint: str = "") -> None:
        super().__init__(f"nix input {input} ({path})", expected, actual)
        self.input = input
        if hint:
            self.message = f"{self.message}; {hint}"


class NixNotDeterministic(NotReproducible):
    """``nix-build --check`` rebuilt the image and got other bytes (nix exit 104); the message names the first difference."""


class NixBuildFailed(BuildFailed):
    """nix evaluated or built the expression and failed for a reason other than an input hash or determinism."""


# --- farm (packager/farm/) ---------------------------------------------------------------


class ClusterUnavailable(EnvironmentMissing):
    """No usable kubeconfig, or the Kubernetes API server cannot be reached or refuses us."""
