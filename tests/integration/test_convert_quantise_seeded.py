"""Precision as a knob over another fp32 recipe, for real: the seeded ResNet-18 of resnet-tvm in int8.

No network: the calibration images are two PNGs in a local wheel. At 64x64 the export and the
quantisation take seconds of CPU each (about 10 s in all, longer on a loaded host).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from packager.cache import Cache
from packager.inputs import convert as cv
from packager.inputs.models.quantise import StaticQuantisation, int8_model
from packager.manifest import load_manifest, resolved_yaml

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _quantisation() -> StaticQuantisation:
    data = yaml.safe_load((REPO / "components" / "conversions" / "onnxruntime-int8-static.yaml").read_text())["conversion"]
    return StaticQuantisation.from_mapping(data["args"], requirements=data["requirements"])



def _calibration(tmp_path: Path, cache: Cache) -> dict:
    """Two small PNGs in a local wheel, pinned like the real calibration set."""
    import hashlib
    import io
    import zipfile

    from PIL import Image

    wheel = tmp_path / "pics-1.0-py3-none-any.whl"
    members = {}
    with zipfile.ZipFile(wheel, "w") as zf:
        for i, colour in enumerate(((200, 30, 30), (20, 90, 220))):
            buf = io.BytesIO()
            Image.new("RGB", (80, 70), colour).save(buf, format="PNG")
            zf.writestr(f"pics/{i}.png", buf.getvalue())
            members[f"pics/{i}.png"] = hashlib.sha256(buf.getvalue()).hexdigest()
    return {"package": "pics", "version": "1.0", "wheel": wheel.name,
            "wheel_sha256": cache.put_file(wheel, None, name=wheel.name), "members": members}


def _write(directory: Path, data: dict) -> Path:
    directory.mkdir()
    (directory / "weights-seed.json").write_text('{"seed": 7}')
    (directory / "request.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return directory


def test_seeded_model_quantised_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    """int8 of resnet-tvm's seeded ResNet-18 (at 64x64, seconds): the fp32 link is made by its own recipe, from the seed."""
    import onnx

    first = Cache.open(tmp_path / "first")
    calibration = _calibration(tmp_path, first)
    data = yaml.safe_load(resolved_yaml(load_manifest(REPO / "artifacts" / "resnet-tvm")))
    data["model"]["input"]["shape"] = ["batch", 3, 64, 64]
    data["preprocessing"].update(resize=73, crop=64)
    fp32_dir = _write(tmp_path / "fp32", data)
    fp32 = load_manifest(fp32_dir)
    fp32_sha = cv.make(fp32, first, file="fp32", local_source=fp32_dir / "weights-seed.json")

    settings = StaticQuantisation.from_mapping({**_quantisation().args(), "calibration": calibration},
                                               requirements=list(_quantisation().requirements))
    model = int8_model(fp32.model.model_copy(update={"sha256": fp32_sha}), settings, sha256="0" * 64)
    int8_dir = _write(tmp_path / "int8", {**data, "model": model.model_dump(mode="json")})
    int8 = load_manifest(int8_dir)
    made = cv.make(int8, first, file="int8", local_source=int8_dir / "weights-seed.json")

    # a second cache without the fp32 file: the chain runs from the seed again
    second = Cache.open(tmp_path / "second")
    second.put_file(first.path_of(calibration["wheel_sha256"]), calibration["wheel_sha256"], name=calibration["wheel"])
    assert cv.make(int8, second, file="int8", local_source=int8_dir / "weights-seed.json") == made
    assert second.has(fp32_sha)
    ops = {n.op_type for n in onnx.load(str(second.path_of(made))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
