"""Backends: the numpy reference executor against onnxruntime on real sample images, and its operators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")

from onnx import TensorProto, helper, numpy_helper

from packager.harness.backends import BackendOptions, create
from packager.harness.backends.reference import conv2d
from packager.harness.dataset import DatasetSpec, load_dataset
from packager.harness.errors import ModelMismatch, UnsupportedOperator
from packager.harness.preprocess import PreprocessParams, load_batch, preprocess_all
from packager.harness.tinynet import build


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def images(tmp_path_factory, shared_sample) -> np.ndarray:
    samples = load_dataset(DatasetSpec(root=shared_sample), count=24)
    params = PreprocessParams(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return load_batch(preprocess_all([s.path for s in samples], params, tmp_path_factory.mktemp("cache"), workers=2))


def test_reference_matches_onnxruntime_on_real_images(tiny, images):
    ort = create("onnxruntime")
    ort.load(tiny, BackendOptions(threads=2))
    ref = create("reference")
    ref.load(tiny, BackendOptions())
    a = np.concatenate([ort.run(images[i : i + 8]) for i in range(0, len(images), 8)])
    b = np.concatenate([ref.run(images[i : i + 8]) for i in range(0, len(images), 8)])
    assert a.shape == b.shape == (24, 1000)
    diff = float(np.abs(a - b).max())
    assert diff < 1e-3, f"max abs logit difference {diff}"
    assert (a.argmax(1) == b.argmax(1)).all()
    assert len(set(a.argmax(1).tolist())) > 1  # the net really discriminates between images
    # batch-1 and batch-8 runs of the reference agree (no cross-batch leakage)
    np.testing.assert_allclose(ref.run(images[3:4])[0], b[3], atol=1e-4)


def _naive_conv(x, w, b, stride, pad, dil, group):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    oh = (xp.shape[2] - dil * (kh - 1) - 1) // stride + 1
    ow = (xp.shape[3] - dil * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, m, oh, ow), np.float64)
    mg = m // group
    for o in range(m):
        g = o // mg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg : (g + 1) * cg, i * stride : i * stride + dil * (kh - 1) + 1 : dil, j * stride : j * stride + dil * (kw - 1) + 1 : dil]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return out


@pytest.mark.parametrize(
    "c,m,k,stride,pad,dil,group",
    [(3, 4, 3, 2, (1, 1, 1, 1), 1, 1), (6, 6, 5, 1, (2, 2, 2, 2), 1, 6), (4, 6, 3, 1, (0, 1, 2, 1), 2, 2), (5, 3, 1, 1, (0, 0, 0, 0), 1, 1)],
)
def test_conv_against_a_direct_loop(c, m, k, stride, pad, dil, group):
    rng = np.random.default_rng(c * 7 + m)
    x = rng.standard_normal((2, c, 9, 11)).astype(np.float32)
    w = rng.standard_normal((m, c // group, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    got = conv2d(x, w, b, {"strides": [stride] * 2, "pads": list(pad), "dilations": [dil] * 2, "group": group})
    np.testing.assert_allclose(got, _naive_conv(x, w, b, stride, pad, dil, group), rtol=1e-4, atol=1e-4)


def _one_node_model(tmp_path: Path, node, inputs, outputs, inits=(), opset=17) -> Path:
    g = helper.make_graph([node], "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    return path


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


@pytest.mark.parametrize(
    "op,attrs,extra",
    [
        ("Softmax", {"axis": 1}, []),
        ("HardSwish", {}, []),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, []),
        ("Transpose", {"perm": [0, 2, 3, 1]}, []),
        ("ReduceMean", {"axes": [1], "keepdims": 0}, []),
    ],
)
def test_single_operators_agree_with_onnxruntime(tmp_path, op, attrs, extra):
    x = np.random.default_rng(3).standard_normal((2, 4, 6, 6)).astype(np.float32)
    node = helper.make_node(op, ["x"] + extra, ["y"], **attrs)
    path = _one_node_model(tmp_path, node, [_vi("x", [2, 4, 6, 6])], [_vi("y", None)])
    ort, ref = create("onnxruntime"), create("reference")
    ort.load(path, BackendOptions(threads=1))
    ref.load(path, BackendOptions())
    np.testing.assert_allclose(ref.run(x), ort.run(x), rtol=1e-5, atol=1e-5)


def test_qdq_roundtrip_agrees_with_onnxruntime(tmp_path):
    x = np.random.default_rng(4).standard_normal((1, 3, 4, 4)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array([0.02, 0.05, 0.1], np.float32), "s"),
        numpy_helper.from_array(np.array([0, 3, -2], np.int8), "z"),
    ]
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1)
    dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)
    g = helper.make_graph([q, dq], "g", [_vi("x", [1, 3, 4, 4])], [_vi("y", [1, 3, 4, 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "q.onnx"))
    ort, ref = create("onnxruntime"), create("reference")
    ort.load(tmp_path / "q.onnx", BackendOptions(threads=1))
    ref.load(tmp_path / "q.onnx", BackendOptions())
    np.testing.assert_array_equal(ref.run(x), ort.run(x))


def test_unsupported_operator_is_named(tmp_path):
    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")
    path = _one_node_model(tmp_path, node, [_vi("x", [2, 2])], [_vi("y", [2, 2])])
    with pytest.raises(UnsupportedOperator, match="Einsum") as e:
        create("reference").load(path, BackendOptions())
    assert str(path) in str(e.value)


def test_garbage_model_file_is_a_model_mismatch(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model at all")
    for name in ("onnxruntime", "reference"):
        with pytest.raises(ModelMismatch) as e:
            create(name).load(bad, BackendOptions())
        assert str(bad) in str(e.value)
