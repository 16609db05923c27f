"""A small fixed-seed ONNX classifier built with ``onnx.helper``, for tests and benchmarks.

It is not pretrained (its top-1 on ImageNet is chance) but it exercises every
operator family the exported EfficientNet-Lite0 uses, in the same opset (17):
dense, strided, depthwise and grouped Conv, BatchNormalization, Clip as ReLU6,
Relu, a squeeze-excite block (GlobalAveragePool, Sigmoid, Mul), a residual Add,
Pad + MaxPool, Concat, ReduceMean, the Shape/Gather/Unsqueeze/Concat/Reshape
chain PyTorch emits for ``flatten``, and Gemm. Only the onnx package is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build(path: Path, *, classes: int = 1000, size: int = 224, seed: int = 0, opset: int = 17, batch: str | int = "batch") -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: list = []
    nodes: list = []

    def w(name: str, *shape: int, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        s = scale if scale is not None else np.sqrt(2.0 / fan_in)
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name))
        return name

    def const(name: str, value, dtype=np.int64) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(nodes)}", **attrs))
        return output

    # stem: 3x3 stride-2 conv, BN, ReLU6 (Clip with min/max inputs, as opset >= 11 exports it)
    x = node("Conv", ["input", w("stem.w", 16, 3, 3, 3)], "stem", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    bn = [
        numpy_helper.from_array((1.0 + 0.1 * rng.standard_normal(16)).astype(np.float32), "bn.scale"),
        numpy_helper.from_array((0.1 * rng.standard_normal(16)).astype(np.float32), "bn.bias"),
        numpy_helper.from_array((0.1 * rng.standard_normal(16)).astype(np.float32), "bn.mean"),
        numpy_helper.from_array((0.5 + rng.random(16)).astype(np.float32), "bn.var"),
    ]
    inits.extend(bn)
    x = node("BatchNormalization", [x, "bn.scale", "bn.bias", "bn.mean", "bn.var"], "stem_bn", epsilon=1e-3)
    x = node("Clip", [x, const("zero", 0.0, np.float32), const("six", 6.0, np.float32)], "stem_act")
    # depthwise 5x5 stride 2 with asymmetric explicit pads, then ReLU
    dw = node("Conv", [x, w("dw.w", 16, 1, 5, 5), w("dw.b", 16, scale=0.1)], "dw", group=16, kernel_shape=[5, 5], strides=[2, 2], pads=[2, 2, 2, 2])
    dw = node("Relu", [dw], "dw_act")
    # squeeze-excite
    se = node("GlobalAveragePool", [dw], "se_pool")
    se = node("Conv", [se, w("se1.w", 4, 16, 1, 1), w("se1.b", 4, scale=0.1)], "se1", kernel_shape=[1, 1])
    se = node("Relu", [se], "se1_act")
    se = node("Conv", [se, w("se2.w", 16, 4, 1, 1), w("se2.b", 16, scale=0.1)], "se2", kernel_shape=[1, 1])
    se = node("Sigmoid", [se], "se_gate")
    x = node("Mul", [dw, se], "se_out")
    # pointwise projection plus a residual from a grouped conv of the same input
    proj = node("Conv", [x, w("proj.w", 24, 16, 1, 1)], "proj", kernel_shape=[1, 1])
    skip = node("Conv", [dw, w("skip.w", 24, 8, 3, 3)], "skip", group=2, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = node("Add", [proj, skip], "res")
    # explicit Pad then MaxPool, and a dilated conv branch, concatenated
    p = node("Pad", [x, const("pads", [0, 0, 1, 1, 0, 0, 1, 1])], "padded", mode="constant")
    mp = node("MaxPool", [p, ], "maxpool", kernel_shape=[3, 3], strides=[1, 1])
    dil = node("Conv", [x, w("dil.w", 8, 24, 3, 3)], "dil", kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])
    x = node("Concat", [mp, dil], "cat", axis=1)
    x = node("Clip", [x, "zero", "six"], "cat_act")
    # head: ReduceMean (axes attribute at opset < 18), flatten via Shape/Gather/Unsqueeze/Concat/Reshape, Gemm
    x = node("ReduceMean", [x], "gap", axes=[2, 3], keepdims=1)
    shape = node("Shape", [x], "gap_shape")
    n = node("Gather", [shape, const("idx0", 0)], "n", axis=0)
    n1 = node("Unsqueeze", [n, const("ax0", [0])], "n1")
    flat_shape = node("Concat", [n1, const("minus1", [-1])], "flat_shape", axis=0)
    x = node("Reshape", [x, flat_shape], "flat")
    # centre the features per image: all-positive ReLU6 features would give every image the same class
    x = node("Sub", [x, node("ReduceMean", [x], "feat_mean", axes=[1], keepdims=1)], "centred")
    node("Gemm", [x, w("fc.w", classes, 32, scale=0.5), w("fc.b", classes, scale=0.1)], "logits", transB=1)

    graph = helper.make_graph(
        nodes,
        "tinynet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="request-pack-tinynet")
    model.ir_version = 8  # readable by onnx 1.12 and every onnxruntime we pin
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
