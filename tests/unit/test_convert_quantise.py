"""Precision as a knob and the EfficientNet-Lite model components, offline.

* every model component's int8 variant is exactly its fp32 variant followed by the shared
  quantisation component (``quantise.int8_model``), so the chain is pinned link by link;
* each lite component's input size is the one its network code is built for, and its
  preprocessing component crops to it;
* ``int8_model`` and the recipe refuse what cannot be quantised, before any work.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from packager.cache import Cache
from packager.compose import derived_manifest
from packager.errors import BadInput
from packager.inputs import convert as cv
from packager.inputs.models.quantise import StaticQuantisation, int8_model
from packager.manifest import Manifest, load_manifest, resolved_yaml

REPO = Path(__file__).resolve().parents[2]
LITE0_FP32, LITE0_INT8 = (
    "e1659a083e3a858319747a697917b63b475cd51336a7a4de1c3487183db15fd4",
    "fb3b468d95630ed0a0105690ca9b317cba22a83fff00bf5e4eb04a2a31107c16",
)
# model component -> (input size, preprocessing component)
LITES = {"efficientnet-lite0": (224, "inception-224"), "efficientnet-lite1": (240, "inception-240"),
         "efficientnet-lite2": (260, "inception-260")}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of components/ and the efficientnet-lite0 artifact: derived manifests go beside it."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(REPO / "components", root / "components")
    (root / "artifacts" / "efficientnet-lite0").mkdir(parents=True)
    shutil.copy(REPO / "artifacts" / "efficientnet-lite0" / "request.yaml", root / "artifacts" / "efficientnet-lite0")
    return root


def _derive(checkout: Path, model: str, precision: str) -> Manifest:
    """``derive artifacts/efficientnet-lite0 --set model.use=MODEL --set model.precision=PRECISION``."""
    name = f"{model}-{precision}"
    out = checkout / "artifacts" / name
    if not out.is_dir():
        # no preprocessing.use: the model component names the one its input size needs
        sets = [f"model.use={model}", f"model.precision={precision}"]
        out.mkdir()
        (out / "request.yaml").write_text(derived_manifest(checkout / "artifacts" / "efficientnet-lite0", sets, name))
    return load_manifest(out)


def _quantisation() -> StaticQuantisation:
    data = yaml.safe_load((REPO / "components" / "conversions" / "onnxruntime-int8-static.yaml").read_text())["conversion"]
    return StaticQuantisation.from_mapping(data["args"], requirements=data["requirements"])


@pytest.mark.parametrize("model", sorted(LITES))
def test_int8_variant_is_the_fp32_variant_then_the_shared_quantisation(checkout: Path, model: str) -> None:
    fp32, int8 = _derive(checkout, model, "fp32"), _derive(checkout, model, "int8")
    assert int8.model == int8_model(fp32.model, _quantisation(), sha256=int8.model.sha256)
    assert int8.model.conversion.args["fp32_sha256"] == fp32.model.sha256 != int8.model.sha256
    assert int8.preprocessing == fp32.preprocessing  # the calibration images are preprocessed with it


def test_lite0_keeps_its_pinned_files(checkout: Path) -> None:
    """The existing artifacts' locks name these: the components must not move them."""
    assert _derive(checkout, "efficientnet-lite0", "fp32").model.sha256 == LITE0_FP32
    int8 = _derive(checkout, "efficientnet-lite0", "int8")
    assert (int8.model.sha256, int8.model.conversion.args["fp32_sha256"]) == (LITE0_INT8, LITE0_FP32)
    assert int8.model == load_manifest(REPO / "artifacts" / "efficientnet-lite0-ort-int8").model


@pytest.mark.parametrize("model", sorted(LITES))
def test_input_size_is_what_the_network_is_built_for(checkout: Path, model: str) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    manifest = _derive(checkout, model, "fp32")
    size, pre = LITES[model]
    component = yaml.safe_load((REPO / "components" / "models" / f"{model}.yaml").read_text())
    assert component["preprocessing"] == {"use": pre}
    assert EfficientNet.get_image_size(model) == size  # the size its static 'same' padding is computed for
    assert manifest.model.input.shape[2:] == [size, size]
    assert manifest.model.conversion.args["builder_args"] == [model]
    assert model.replace("-", "_") in manifest.model.source.member.replace("-", "_")
    # the crop is the input; resize keeps lite0's crop fraction 224/256 = 0.875, normalisation unchanged
    assert manifest.preprocessing.crop == size and manifest.preprocessing.resize == round(size / 0.875)
    lite0 = _derive(checkout, "efficientnet-lite0", "fp32").preprocessing
    assert manifest.preprocessing.model_copy(update={"crop": 224, "resize": 256}) == lite0


@pytest.mark.parametrize("model", sorted(LITES))
def test_published_accuracy_rises_with_size(checkout: Path, model: str) -> None:
    """The TF TPU table's fp32 top-1 (75.1, 76.7, 77.6 %) and its source, per model."""
    expectations = _derive(checkout, model, "fp32").expectations
    assert expectations.published_top1 == {"efficientnet-lite0": 0.751, "efficientnet-lite1": 0.767,
                                           "efficientnet-lite2": 0.776}[model]
    assert "tensorflow/tpu models/official/efficientnet/lite/README.md" in " ".join(expectations.published_source.split())


def test_int8_model_of_a_seeded_model_names_its_fp32_recipe() -> None:
    fp32 = load_manifest(REPO / "artifacts" / "resnet-tvm").model
    int8 = int8_model(fp32, _quantisation(), sha256="a" * 64)
    assert int8.precision == "int8" and int8.conversion.recipe == "onnxruntime-quantize-static"
    assert int8.conversion.args["fp32_recipe"] == "pytorch-seeded-to-onnx"
    assert int8.conversion.args["fp32_sha256"] == fp32.sha256
    assert int8.conversion.requirements == [*fp32.conversion.requirements, "onnxruntime==1.32.0", "numpy==2.4.6", "pillow==12.1.1"]
    assert int8.source == fp32.source and int8.input == fp32.input


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m.model_copy(update={"precision": "int8"}), "precision int8"),
        (lambda m: m.model_copy(update={"conversion": None}), "no conversion recipe"),
        (lambda m: m.model_copy(update={"conversion": m.conversion.model_copy(update={"requirements": ["numpy==2.3.0"]})}),
         "the fp32 recipe pins numpy==2.3.0 but the quantisation pins numpy==2.4.6"),
    ],
)
def test_int8_model_refuses_what_it_cannot_quantise(edit, words: str) -> None:
    fp32 = load_manifest(REPO / "artifacts" / "efficientnet-lite0").model
    with pytest.raises(BadInput, match=words):
        int8_model(edit(fp32), _quantisation(), sha256="a" * 64)


def test_unknown_fp32_recipe_is_named_before_any_work(tmp_path: Path) -> None:
    data = yaml.safe_load(resolved_yaml(load_manifest(REPO / "artifacts" / "efficientnet-lite0-ort-int8")))
    data["model"]["conversion"]["args"]["fp32_recipe"] = "onnxruntime-quantize-static"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "request.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BadInput, match=r"model.conversion.args.fp32_recipe: fp32_recipe 'onnxruntime-quantize-static' is not one of"):
        cv.convert(tmp_path / "a", cache=Cache.open(tmp_path / "cache"))
    assert not list((tmp_path / "cache").rglob("*.whl"))


