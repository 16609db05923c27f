"""The recipes onnxruntime-quantize-static and pytorch-seeded-to-onnx: their error paths, offline.

Each failure must be a typed error naming the field to fix, raised before any
download, export or quantisation starts.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from packager.cache import Cache
from packager.errors import BadInput, IntegrityError, RecipeEnvironmentMismatch
from packager.inputs import convert as cv
from packager.inputs.models import pytorch, quantise
from packager.manifest import load_manifest, resolved_yaml

REPO = Path(__file__).resolve().parents[2]
INT8 = REPO / "artifacts" / "efficientnet-lite0-ort-int8"
RESNET = REPO / "artifacts" / "resnet-tvm"


def _copy(tmp_path: Path, src: Path, edit, *, extra: dict[str, str] | None = None) -> Path:
    data = yaml.safe_load(resolved_yaml(load_manifest(src)))  # the resolved form: no components to find in tmp_path
    edit(data)
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "request.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    for name, text in (extra or {}).items():
        (out / name).write_text(text)
    return out


def _args(data: dict) -> dict:
    return data["model"]["conversion"]["args"]


# --- onnxruntime-quantize-static ----------------------------------------------------------


def test_committed_int8_manifest_pins_the_fp32_artifact() -> None:
    fp32 = load_manifest(REPO / "artifacts" / "efficientnet-lite0")
    int8 = load_manifest(INT8)
    assert int8.model.conversion.args["fp32_sha256"] == fp32.model.sha256
    assert int8.model.source == fp32.model.source
    assert int8.preprocessing == fp32.preprocessing


def test_calibration_images_are_not_evaluation_images() -> None:
    calibration = quantise.CalibrationSet.from_args(load_manifest(INT8).model.conversion.args["calibration"])
    sample = REPO.parent / "shared" / "data" / "imagenet-sample" / "images"
    names = {Path(m).name for m, _ in calibration.members}
    assert all(not n.startswith("n0") and not n.startswith("n1") and "ILSVRC" not in n for n in names)
    if sample.is_dir():
        digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in sample.iterdir()}
        assert not digests & {d for _, d in calibration.members}


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda a: a.pop("fp32_sha256"), "model.conversion.args.fp32_sha256", "is required"),
        (lambda a: a.update(fp32_sha256="abc"), "model.conversion.args.fp32_sha256", "is required"),
        (lambda a: a.pop("calibration"), "model.conversion.args.calibration", "not in the evaluation set"),
        (lambda a: a.update(per_chanel=True), "model.conversion.args.per_chanel", "did you mean 'per_channel'"),
        (lambda a: a.update(reduce_range="yes"), "model.conversion.args.reduce_range", "true or false"),
        (lambda a: a["calibration"].pop("wheel_sha256"), "model.conversion.args.calibration", "missing keys ['wheel_sha256']"),
        (lambda a: a["calibration"].update(images=[]), "model.conversion.args.calibration", "unknown keys ['images']"),
        (lambda a: a["calibration"].update(members={}), "model.conversion.args.calibration.members", "map wheel members"),
        (lambda a: a["calibration"]["members"].update({"x.png": "nope"}), "model.conversion.args.calibration.members", "not a sha256"),
    ],
)
def test_bad_quantisation_args_are_named_before_any_work(tmp_path: Path, edit, field: str, words: str) -> None:
    artifact = _copy(tmp_path, INT8, lambda d: edit(_args(d)))
    cache = Cache.open(tmp_path / "cache")
    with pytest.raises(BadInput) as e:
        cv.convert(artifact, cache=cache)
    assert e.value.return_code == 2
    assert field in str(e.value) and words in str(e.value)
    assert not list((tmp_path / "cache").rglob("*.whl"))  # nothing was downloaded


def test_int8_pins_are_checked_first(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["model"]["conversion"]["requirements"][3] = "onnxruntime==1.0.0"

    with pytest.raises(RecipeEnvironmentMismatch) as e:
        cv.convert(_copy(tmp_path, INT8, edit), cache=Cache.open(tmp_path / "cache"))
    assert "onnxruntime==1.0.0 is pinned but onnxruntime" in str(e.value)


def _png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 260), colour).save(buf, format="PNG")
    return buf.getvalue()


def _calibration_wheel(tmp_path: Path, cache: Cache, members: dict[str, bytes]) -> dict:
    wheel = tmp_path / "pics-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    digest = cache.put_file(wheel, None, name=wheel.name)
    return {"package": "pics", "version": "1.0", "wheel": wheel.name, "wheel_sha256": digest,
            "members": {n: hashlib.sha256(d).hexdigest() for n, d in members.items()}}


def test_calibration_images_come_out_preprocessed_in_sorted_order(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path / "cache")
    spec = _calibration_wheel(tmp_path, cache, {"b.png": _png((0, 0, 0)), "a.png": _png((255, 255, 255))})
    tensors = quantise.calibration_tensors(quantise.CalibrationSet.from_args(spec), load_manifest(INT8), cache)
    assert [t.shape for t in tensors] == [(1, 3, 224, 224)] * 2
    # a.png (white) first: (1 - 127/255) / (128/255) = 1; black: -127/128
    assert np.allclose(tensors[0], 128 / 128) and np.allclose(tensors[1], -127 / 128)


def test_a_calibration_image_with_other_bytes_is_refused(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path / "cache")
    spec = _calibration_wheel(tmp_path, cache, {"a.png": _png((1, 2, 3))})
    spec["members"]["a.png"] = "0" * 64
    with pytest.raises(IntegrityError, match=r"pics-1.0-py3-none-any.whl!a.png"):
        quantise.calibration_tensors(quantise.CalibrationSet.from_args(spec), load_manifest(INT8), cache)


def test_a_calibration_member_missing_from_the_wheel_names_the_field(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path / "cache")
    spec = _calibration_wheel(tmp_path, cache, {"a.png": _png((1, 2, 3))})
    spec["members"]["gone.png"] = "1" * 64
    with pytest.raises(BadInput, match=r"calibration.members"):
        quantise.calibration_tensors(quantise.CalibrationSet.from_args(spec), load_manifest(INT8), cache)


# --- pytorch-seeded-to-onnx ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", "is not JSON"),
        ('{"seed": -1}', "non-negative integer"),
        ('{"seed": true}', "non-negative integer"),
        ('{"sede": 3}', "non-negative integer"),
        ("[3]", "non-negative integer"),
    ],
)
def test_bad_seed_file_names_the_source_path(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "seed.json").write_text(text)
    with pytest.raises(BadInput) as e:
        pytorch.read_seed(tmp_path / "seed.json")
    assert "model.source.path" in str(e.value) and words in str(e.value)


def test_missing_seed_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        pytorch.read_seed(tmp_path / "absent.json")


def test_seeded_recipe_needs_a_file_source(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["model"]["source"] = {"kind": "url", "url": "https://example.org/resnet50.onnx"}

    with pytest.raises(BadInput, match=r"needs a file source holding the seed, not 'url'"):
        cv.convert(_copy(tmp_path, RESNET, edit), cache=Cache.open(tmp_path / "cache"))


def test_seeded_recipe_rejects_unknown_args(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["model"]["conversion"]["args"] = {"seed": 3}

    artifact = _copy(tmp_path, RESNET, edit, extra={"weights-seed.json": json.dumps({"seed": 1})})
    with pytest.raises(BadInput, match=r"model.conversion.args.seed"):
        cv.convert(artifact, cache=Cache.open(tmp_path / "cache"))


def test_seeded_recipe_needs_a_builder(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        del d["model"]["conversion"]["builder"]

    artifact = _copy(tmp_path, RESNET, edit, extra={"weights-seed.json": json.dumps({"seed": 1})})
    with pytest.raises(BadInput, match=r"model.conversion.builder"):
        cv.convert(artifact, cache=Cache.open(tmp_path / "cache"))


def test_committed_seed_file_is_valid() -> None:
    manifest = load_manifest(RESNET)
    assert pytorch.read_seed(RESNET / manifest.model.source.path) == 20261125
