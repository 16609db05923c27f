"""The lock file's wire format, ``artifacts/<name>/request.lock``, and reading it.

Pydantic models (``extra="forbid"``) for every entry, ``load_lock``, and the
list of files a lock pins (``locked_objects``). Shared by ``lock`` (which writes
and checks locks) and ``materialise`` (which makes the files a lock pins), so
neither has to import the other.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from packager.cache import sha256_file
from packager.errors import (
    BadInput,
    LockFileError,
)
from packager.inputs.sourcebuild import SourceBuildLock
from packager.manifest import (
    Manifest,
)
from packager.platforms import BaseSystem, Platform, base_system
from packager.repo import DOCKERFILE_TEMPLATES

log = logging.getLogger(__name__)

LOCK_VERSION = 1
# What the Nix derivation runs besides the amd64 platform's own .debs (python3, GNU tar): pigz compresses
# every layer with zlib, as our writer does; fakeroot lets GNU tar rewrite the base layer's owners and modes.
NIX_BUILDER_PACKAGES = ("pigz", "fakeroot")
TEMPLATE_DIR = DOCKERFILE_TEMPLATES

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- wire format -----------------------------------------------------------------------


class DebEntry(Wire):
    name: str
    version: str
    architecture: str
    filename: str
    size: int = Field(ge=0)
    sha256: Sha256
    url: str
    locations: list[str] | None = Field(
        None, description="where else the same bytes are served, tried in order after url (Debian's snapshot "
                          "service by content); absent in locks made before it was recorded")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler):
        # a lock made before locations were recorded keeps its bytes
        return {k: v for k, v in handler(self).items() if not (k == "locations" and v is None)}

    def all_locations(self) -> tuple[str, ...]:
        return (self.url, *(self.locations or ()))


class AptSourceEntry(Wire):
    url: str
    suite: str
    component: str


class DebianLock(Wire):
    arch: str
    suite: str
    sources: list[AptSourceEntry]
    packages: list[DebEntry]

    # Sorted here, not only by the resolver, so the bytes cannot depend on how a lock was assembled.
    _sorted = field_validator("packages")(classmethod(lambda cls, v: sorted(v, key=lambda d: (d.name, d.architecture, d.version))))


class WheelEntry(Wire):
    name: str
    version: str
    filename: str
    size: int = Field(ge=0)
    sha256: Sha256
    url: str | None = Field(None, description="where to download it; absent for a wheel built from its sdist")
    requested: bool
    build: SourceBuildLock | None = Field(None, description="how the wheel is built from its sdist (no wheel on PyPI)")

    @model_validator(mode="after")
    def _one_origin(self) -> "WheelEntry":
        if (self.url is None) == (self.build is None):
            raise ValueError("a wheel has either a url or a build recipe")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler):
        # a downloaded wheel's entry keeps the bytes it had before built wheels existed
        return {k: v for k, v in handler(self).items() if not (k in ("url", "build") and v is None)}


class PlatformLock(Wire):
    debian: DebianLock
    wheels: list[WheelEntry]

    _sorted = field_validator("wheels")(classmethod(lambda cls, v: sorted(v, key=lambda w: (w.name, w.filename))))


class ModelSourceLock(Wire):
    kind: Literal["pypi-file", "file", "url"]
    sha256: Sha256 = Field(description="the source file: the local file, the download, or the wheel member")
    size: int = Field(ge=0)
    path: str | None = None
    url: str | None = None
    package: str | None = None
    version: str | None = None
    wheel: str | None = None
    wheel_sha256: Sha256 | None = None
    wheel_url: str | None = None
    member: str | None = None


class ConversionLock(Wire):
    recipe: str
    requirements: list[str]


class ModelLock(Wire):
    sha256: Sha256 = Field(description="the ONNX file the harness loads (cas object)")
    filename: str
    source: ModelSourceLock
    conversion: ConversionLock | None = None


class DatasetFile(Wire):
    path: str
    sha256: Sha256
    size: int = Field(ge=0)


class DatasetLock(Wire):
    layout: str
    labels: DatasetFile
    images: list[DatasetFile]

    _sorted = field_validator("images")(classmethod(lambda cls, v: sorted(v, key=lambda f: f.path)))


class PythonTarget(Wire):
    implementation: Literal["cp"] = "cp"
    version: str = base_system().python
    abi: str = base_system().python_tag

    @classmethod
    def of(cls, system: BaseSystem) -> "PythonTarget":
        return cls(version=system.python, abi=system.python_tag)


class Lock(Wire):
    lock_version: Literal[1]
    generator: Literal["request-pack"]
    artifact: str
    manifest_sha256: Sha256
    model: ModelLock
    dataset: DatasetLock | None = None
    templates: dict[str, Sha256]
    python: PythonTarget
    platforms: dict[str, PlatformLock]
    components: dict[str, Sha256] | None = Field(
        None, description="every component and parent manifest the manifest used (docs/components.md), by path from "
                          "the checkout: a change to one makes the lock stale; absent for a manifest without use:")
    builder: DebianLock | None = Field(
        None, description="the Nix witness's own tools (nix/README.md): the amd64 .debs of NIX_BUILDER_PACKAGES that the "
                          "linux/amd64 platform does not lock already; in no image; absent without linux/amd64")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler):
        # a lock of a manifest without components (or without a builder section) keeps its bytes
        return {k: v for k, v in handler(self).items() if not (k in ("components", "builder") and v is None)}

    @field_validator("platforms")
    @classmethod
    def _known_platforms(cls, v: dict[str, PlatformLock]) -> dict[str, PlatformLock]:
        for key in v:
            Platform(key)
        return v

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class LockedObject:
    """One file the build needs from the cache; ``made_by`` says what puts it there."""

    name: str
    sha256: str
    size: int | None = None
    url: str | None = None
    made_by: Literal["fetch", "sourcebuild", "convert"] = "fetch"
    locations: tuple[str, ...] = ()  # after url, in order (a .deb's snapshot locations)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every place to download it from, in the order to try them."""
        return tuple(dict.fromkeys((*((self.url,) if self.url else ()), *self.locations)))


@dataclass(frozen=True)
class PlatformSummary:
    platform: str
    debs: int
    wheels: int
    bytes: int


@dataclass(frozen=True)
class LockResult:
    path: Path
    lock: Lock
    changed: bool
    frozen: bool
    summary: tuple[PlatformSummary, ...] = field(default_factory=tuple)


# --- reading ----------------------------------------------------------------------------------


def load_lock(path: Path) -> Lock:
    """Parse and validate; LockFileError names the file and the first bad field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LockFileError("missing: run `request-pack lock` first", file=path) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LockFileError(f"not valid JSON: {e}", file=path) from None
    try:
        return Lock.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise LockFileError(err["msg"], file=path, field=loc) from None


def locked_objects(lock: Lock, platforms: list[str] | None = None) -> list[LockedObject]:
    """Every cache object a build of these platforms (default: all in the lock) reads."""
    m = lock.model
    out = [LockedObject(f"model {m.filename}", m.sha256, made_by="convert" if m.conversion else "fetch")]
    src = m.source
    if src.sha256 != m.sha256:
        out.append(LockedObject(f"model source {src.path or src.member or src.url}", src.sha256, src.size, src.url))
    if src.wheel_sha256:
        out.append(LockedObject(f"model wheel {src.wheel}", src.wheel_sha256, None, src.wheel_url))
    for key in sorted(platforms or lock.platforms):
        pl = lock.platforms[key]
        out += [LockedObject(f"{key} deb {d.filename}", d.sha256, d.size, d.url, locations=tuple(d.locations or ()))
                for d in pl.debian.packages]
        out += [LockedObject(f"{key} wheel {w.filename}", w.sha256, w.size, w.url, "sourcebuild" if w.build else "fetch")
                for w in pl.wheels]
        out += [LockedObject(f"{key} build input {f.filename} of {w.filename}", f.sha256, f.size, f.url,
                             locations=tuple(f.locations or ()))
                for w in pl.wheels if w.build for f in w.build.inputs()]
    if lock.builder is not None:
        out += [LockedObject(f"nix builder deb {d.filename}", d.sha256, d.size, d.url, locations=tuple(d.locations or ()))
                for d in lock.builder.packages]
    return out


def template_hashes(template_dir: Path = TEMPLATE_DIR) -> dict[str, str]:
    if not template_dir.is_dir():
        return {}
    return {f"{template_dir.name}/{p.name}": sha256_file(p) for p in sorted(template_dir.glob("*.j2")) if p.is_file()}


def dataset_pins(directory: Path, manifest: Manifest) -> DatasetLock:
    """sha256 of the labels file and of every image, by path relative to the dataset directory."""
    directory = Path(directory)
    labels = directory / manifest.dataset.labels
    images_dir = directory / manifest.dataset.images
    if not labels.is_file():
        raise BadInput("labels file not found", file=labels, field="dataset.labels")
    if not images_dir.is_dir():
        raise BadInput("image directory not found", file=images_dir, field="dataset.images")
    images = sorted(p for p in images_dir.rglob("*") if p.is_file())

    def pin(p: Path) -> DatasetFile:
        return DatasetFile(path=PurePosixPath(p.relative_to(directory)).as_posix(), sha256=sha256_file(p), size=p.stat().st_size)

    return DatasetLock(layout=manifest.dataset.layout, labels=pin(labels), images=[pin(p) for p in images])


