"""A pure-numpy ONNX executor for the operators our example image classifiers use.

It exists for targets without an onnxruntime wheel (armv7 has Debian's
python3-numpy 1.24 and python3-onnx 1.12), and as an independent second opinion
for cross-backend equivalence. So it sticks to APIs present in onnx 1.12
(``onnx.load``, ``numpy_helper.to_array``, ``helper.get_attribute_value``) and
numpy 1.24, and computes in float32 like the other backends.

Convolution never builds a full im2col matrix: for each kernel offset it takes a
strided view of the padded input and accumulates one BLAS matmul (dense) or one
broadcast multiply (depthwise), so memory stays at a few activations' size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from packager.harness.backends.base import Backend, BackendOptions, InputInfo
from packager.harness.errors import (
    BackendUnavailable,
    ModelMismatch,
    UnsupportedOperator,
)

log = logging.getLogger(__name__)

# TensorProto.DataType -> numpy; onnx.mapping moved between releases, so keep our own.
_NP_TYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


class Node:
    __slots__ = ("op", "inputs", "outputs", "attrs", "name")

    def __init__(self, op: str, inputs: list[str], outputs: list[str], attrs: dict[str, Any], name: str) -> None:
        self.op, self.inputs, self.outputs, self.attrs, self.name = op, inputs, outputs, attrs, name


# --- convolution and pooling ---------------------------------------------------------


def _conv_pads(attrs: dict, in_hw: tuple[int, int], k_hw: tuple[int, int], strides, dilations) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), resolving auto_pad like the ONNX spec."""
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(2):
            out = -(-in_hw[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (k_hw[i] - 1) * dilations[i] + 1 - in_hw[i])
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return pads[0][0], pads[1][0], pads[0][1], pads[1][1]
    if auto == "VALID":
        return 0, 0, 0, 0
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    return p[0], p[1], p[2], p[3]


def _windows(x: np.ndarray, kh: int, kw: int, oh: int, ow: int, s, d):
    """Yield (i, j, view) for each kernel offset: view is x sampled at that offset, shape (N, C, oh, ow)."""
    for i in range(kh):
        r0 = i * d[0]
        for j in range(kw):
            c0 = j * d[1]
            yield i, j, x[:, :, r0 : r0 + s[0] * (oh - 1) + 1 : s[0], c0 : c0 + s[1] * (ow - 1) + 1 : s[1]]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict) -> np.ndarray:
    if x.ndim != 4:
        raise UnsupportedOperator(f"Conv on {x.ndim}-d input (only 2-D convolution is implemented)")
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    group = int(attrs.get("group", 1))
    s = tuple(attrs.get("strides", [1, 1]))
    d = tuple(attrs.get("dilations", [1, 1]))
    top, left, bottom, right = _conv_pads(attrs, (h, wd), (kh, kw), s, d)
    if top or left or bottom or right:
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    hp, wp = x.shape[2], x.shape[3]
    oh = (hp - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wp - d[1] * (kw - 1) - 1) // s[1] + 1
    if group == 1:
        out = _conv_dense(x, w, oh, ow, s, d)
    elif group == c and cg == 1 and m == c:
        out = np.zeros((n, m, oh, ow), dtype=np.float32)
        for i, j, view in _windows(x, kh, kw, oh, ow, s, d):
            out += view * w[:, 0, i, j][None, :, None, None]
    else:
        mg = m // group
        parts = [
            _conv_dense(x[:, g * cg : (g + 1) * cg], w[g * mg : (g + 1) * mg], oh, ow, s, d) for g in range(group)
        ]
        out = np.concatenate(parts, axis=1)
    if b is not None:
        out += b.astype(np.float32)[None, :, None, None]
    return out


def _conv_dense(x: np.ndarray, w: np.ndarray, oh: int, ow: int, s, d) -> np.ndarray:
    n, c = x.shape[:2]
    m, _, kh, kw = w.shape
    if kh == kw == 1 and s == (1, 1):
        cols = x[:, :, :oh, :ow].reshape(n, c, oh * ow)
        return np.matmul(w.reshape(m, c), cols).reshape(n, m, oh, ow)
    out = np.zeros((n, m, oh * ow), dtype=np.float32)
    for i, j, view in _windows(x, kh, kw, oh, ow, s, d):
        out += np.matmul(w[:, :, i, j], np.ascontiguousarray(view).reshape(n, c, oh * ow))
    return out.reshape(n, m, oh, ow)


def _pool(x: np.ndarray, attrs: dict, kind: str) -> np.ndarray:
    k = tuple(attrs["kernel_shape"])
    s = tuple(attrs.get("strides", [1, 1]))
    d = tuple(attrs.get("dilations", [1, 1]))
    n, c, h, w = x.shape
    top, left, bottom, right = _conv_pads(attrs, (h, w), k, s, d)
    if attrs.get("ceil_mode", 0):
        raise UnsupportedOperator(f"{kind} with ceil_mode=1")
    fill = -np.inf if kind == "MaxPool" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    oh = (xp.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (xp.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if kind == "MaxPool":
        out = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
        for _, _, view in _windows(xp, k[0], k[1], oh, ow, s, d):
            np.maximum(out, view, out=out)
        return out
    out = np.zeros((n, c, oh, ow), dtype=np.float32)
    for _, _, view in _windows(xp, k[0], k[1], oh, ow, s, d):
        out += view
    if attrs.get("count_include_pad", 0) or not (top or left or bottom or right):
        return out / np.float32(k[0] * k[1])
    ones = np.pad(np.ones((1, 1, h, w), np.float32), ((0, 0), (0, 0), (top, bottom), (left, right)))
    cnt = np.zeros((1, 1, oh, ow), np.float32)
    for _, _, view in _windows(ones, k[0], k[1], oh, ow, s, d):
        cnt += view
    return out / cnt


# --- the rest of the operator set -----------------------------------------------------


def _axes_arg(node: Node, args: list, pos: int) -> list[int] | None:
    """Axes come as an attribute before opset 13/18 and as an input after: accept both."""
    if len(args) > pos and args[pos] is not None:
        return [int(a) for a in np.asarray(args[pos]).reshape(-1)]
    a = node.attrs.get("axes")
    return None if a is None else [int(v) for v in a]


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    target = [int(v) for v in shape.reshape(-1)]
    if not allowzero:
        target = [data.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return data.reshape(target)


def _softmax(x: np.ndarray, axis: int, opset: int) -> np.ndarray:
    if opset < 13:
        # Before opset 13 Softmax flattens to 2-D at ``axis``.
        shape = x.shape
        x2 = x.reshape(int(np.prod(shape[:axis])), -1)
        return _softmax(x2, 1, 13).reshape(shape)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _per_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _quantize(x, scale, zp, axis):
    dtype = zp.dtype if zp is not None else np.uint8
    info = np.iinfo(dtype)
    sc = _per_axis(scale, x.ndim, axis)
    z = _per_axis(zp, x.ndim, axis).astype(np.int32) if zp is not None else 0
    q = np.rint(x / sc) + z
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(x, scale, zp, axis):
    sc = _per_axis(scale, x.ndim, axis).astype(np.float32)
    z = _per_axis(zp, x.ndim, axis).astype(np.int32) if zp is not None else 0
    return ((x.astype(np.int32) - z).astype(np.float32) * sc).astype(np.float32)


def _pad(node: Node, args: list, opset: int) -> np.ndarray:
    x = args[0]
    if opset < 11:
        pads = list(node.attrs["pads"])
        value = float(node.attrs.get("value", 0.0))
    else:
        pads = [int(v) for v in args[1].reshape(-1)]
        value = float(args[2].reshape(-1)[0]) if len(args) > 2 and args[2] is not None and args[2].size else 0.0
    axes = _axes_arg(node, [None] + args[1:], 3) if opset >= 18 else None
    axes = [a % x.ndim for a in axes] if axes else list(range(x.ndim))
    k = len(axes)
    width = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        width[a] = (pads[i], pads[i + k])
    if any(p < 0 for pair in width for p in pair):
        raise UnsupportedOperator("Pad with negative pads")
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=value)
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _slice(args: list) -> np.ndarray:
    data, starts, ends = args[0], args[1].reshape(-1), args[2].reshape(-1)
    axes = args[3].reshape(-1) if len(args) > 3 and args[3] is not None else np.arange(len(starts))
    steps = args[4].reshape(-1) if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
    idx = [slice(None)] * data.ndim
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        idx[int(ax) % data.ndim] = slice(int(st), int(en), int(sp))
    return data[tuple(idx)]


def _gemm(a, b, c, attrs):
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    y = np.float32(attrs.get("alpha", 1.0)) * (a @ b)
    if c is not None:
        y = y + np.float32(attrs.get("beta", 1.0)) * c
    return y


def _batchnorm(x, scale, bias, mean, var, attrs):
    eps = np.float32(attrs.get("epsilon", 1e-5))
    k = (scale / np.sqrt(var + eps)).astype(np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * k.reshape(shape) + (bias - mean * k).astype(np.float32).reshape(shape)


def _constant(node: Node):
    import onnx.numpy_helper as nh

    a = node.attrs
    if "value" in a:
        return nh.to_array(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in a:
            return np.array(a[key], dtype=dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.array(list(a[key]), dtype=dtype)
    raise UnsupportedOperator(f"Constant node {node.name!r} with attributes {sorted(a)}")


def _ops(opset: int) -> dict[str, Callable[[Node, list], Any]]:
    f32 = np.float32

    def clip(n, a):
        if opset < 11:
            lo, hi = n.attrs.get("min", -np.inf), n.attrs.get("max", np.inf)
        else:
            lo = a[1] if len(a) > 1 and a[1] is not None else -np.inf
            hi = a[2] if len(a) > 2 and a[2] is not None else np.inf
        return np.clip(a[0], lo, hi).astype(a[0].dtype)

    def reduce(fn):
        def run(n, a):
            axes = _axes_arg(n, a, 1) if opset >= 18 or n.op == "ReduceSum" and opset >= 13 else n.attrs.get("axes")
            keep = bool(n.attrs.get("keepdims", 1))
            if not axes and n.attrs.get("noop_with_empty_axes", 0):
                return a[0]
            return fn(a[0], axis=tuple(axes) if axes else None, keepdims=keep).astype(a[0].dtype)

        return run

    def squeeze(n, a):
        axes = _axes_arg(n, a, 1)
        return np.squeeze(a[0], axis=tuple(axes)) if axes else np.squeeze(a[0])

    def unsqueeze(n, a):
        axes = sorted(ax % (a[0].ndim + len(_axes_arg(n, a, 1))) for ax in _axes_arg(n, a, 1))
        out = a[0]
        for ax in axes:
            out = np.expand_dims(out, ax)
        return out

    def shape(n, a):
        dims = np.array(a[0].shape, dtype=np.int64)
        return dims[n.attrs.get("start", 0) : n.attrs.get("end", None)]

    def constant_of_shape(n, a):
        import onnx.numpy_helper as nh

        value = nh.to_array(n.attrs["value"]).reshape(-1)[0] if "value" in n.attrs else f32(0)
        return np.full([int(v) for v in a[0].reshape(-1)], value)

    def qaxis(n, a):
        return int(n.attrs.get("axis", 1)) % max(a[0].ndim, 1)

    return {
        "Conv": lambda n, a: conv2d(a[0], a[1], a[2] if len(a) > 2 else None, n.attrs),
        "Relu": lambda n, a: np.maximum(a[0], f32(0)),
        "LeakyRelu": lambda n, a: np.where(a[0] >= 0, a[0], a[0] * f32(n.attrs.get("alpha", 0.01))),
        "Clip": clip,
        "Sigmoid": lambda n, a: (1.0 / (1.0 + np.exp(-a[0]))).astype(a[0].dtype),
        "HardSigmoid": lambda n, a: np.clip(a[0] * f32(n.attrs.get("alpha", 0.2)) + f32(n.attrs.get("beta", 0.5)), 0, 1).astype(a[0].dtype),
        "HardSwish": lambda n, a: (a[0] * np.clip(a[0] / f32(6) + f32(0.5), 0, 1)).astype(a[0].dtype),
        "Tanh": lambda n, a: np.tanh(a[0]),
        "Exp": lambda n, a: np.exp(a[0]),
        "Sqrt": lambda n, a: np.sqrt(a[0]),
        "Neg": lambda n, a: -a[0],
        "Add": lambda n, a: a[0] + a[1],
        "Sub": lambda n, a: a[0] - a[1],
        "Mul": lambda n, a: a[0] * a[1],
        # ONNX integer Div truncates toward zero, like C; Python's // floors.
        "Div": lambda n, a: a[0] / a[1] if a[0].dtype.kind == "f" else np.trunc(a[0] / a[1]).astype(a[0].dtype),
        "MatMul": lambda n, a: np.matmul(a[0], a[1]),
        "Gemm": lambda n, a: _gemm(a[0], a[1], a[2] if len(a) > 2 else None, n.attrs),
        "BatchNormalization": lambda n, a: _batchnorm(*a[:5], n.attrs),
        "GlobalAveragePool": lambda n, a: a[0].mean(axis=tuple(range(2, a[0].ndim)), keepdims=True, dtype=np.float32),
        "GlobalMaxPool": lambda n, a: a[0].max(axis=tuple(range(2, a[0].ndim)), keepdims=True),
        "MaxPool": lambda n, a: _pool(a[0], n.attrs, "MaxPool"),
        "AveragePool": lambda n, a: _pool(a[0], n.attrs, "AveragePool"),
        "ReduceMean": reduce(np.mean),
        "ReduceSum": reduce(np.sum),
        "Flatten": lambda n, a: a[0].reshape(int(np.prod(a[0].shape[: n.attrs.get("axis", 1)])), -1),
        "Reshape": lambda n, a: _reshape(a[0], a[1], int(n.attrs.get("allowzero", 0))),
        "Squeeze": squeeze,
        "Unsqueeze": unsqueeze,
        "Transpose": lambda n, a: np.transpose(a[0], n.attrs.get("perm")),
        "Concat": lambda n, a: np.concatenate([x for x in a if x is not None], axis=int(n.attrs["axis"])),
        "Shape": shape,
        "Gather": lambda n, a: np.take(a[0], a[1].astype(np.int64), axis=int(n.attrs.get("axis", 0))),
        "Slice": lambda n, a: _slice(a),
        "Cast": lambda n, a: a[0].astype(_NP_TYPES[int(n.attrs["to"])]),
        "Constant": lambda n, a: _constant(n),
        "ConstantOfShape": constant_of_shape,
        "Identity": lambda n, a: a[0],
        "Dropout": lambda n, a: a[0],
        "Pad": lambda n, a: _pad(n, a, opset),
        "Softmax": lambda n, a: _softmax(a[0], int(n.attrs.get("axis", -1 if opset >= 13 else 1)), opset),
        "QuantizeLinear": lambda n, a: _quantize(a[0], a[1], a[2] if len(a) > 2 else None, qaxis(n, a)),
        "DequantizeLinear": lambda n, a: _dequantize(a[0], a[1], a[2] if len(a) > 2 else None, qaxis(n, a)),
    }


SUPPORTED_OPS = tuple(sorted(_ops(17)))


class ReferenceBackend(Backend):
    """Runs the graph node by node in file order (ONNX requires topological order)."""

    name = "reference"

    def __init__(self) -> None:
        try:
            import onnx  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(f"the reference backend needs the onnx package: {e}", fix="apt-get install python3-onnx or pip install onnx") from None

    @property
    def version(self) -> str:
        import onnx

        return f"numpy {np.__version__}, onnx {onnx.__version__}"

    def load(self, model_path: Path, options: BackendOptions) -> None:
        import onnx
        from onnx import helper, numpy_helper

        try:
            model = onnx.load(str(model_path))
        except Exception as e:  # protobuf's DecodeError and friends
            raise ModelMismatch(f"cannot parse ONNX model: {e}", file=model_path) from None
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        g = model.graph
        self._consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for name, arr in self._consts.items():
            if arr.dtype == np.float64:
                self._consts[name] = arr.astype(np.float32)
        self._ops = _ops(self.opset)
        self._nodes: list[Node] = []
        missing: dict[str, int] = {}
        for node in g.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in self._ops:
                key = f"{node.domain + '.' if node.domain else ''}{node.op_type}"
                missing[key] = missing.get(key, 0) + 1
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            for k, v in list(attrs.items()):
                if isinstance(v, bytes):
                    attrs[k] = v.decode()
            self._nodes.append(Node(node.op_type, list(node.input), list(node.output), attrs, node.name))
        if missing:
            raise UnsupportedOperator(f"reference backend lacks operator(s) {sorted(missing)}", file=model_path)
        inputs = [i for i in g.input if i.name not in self._consts]
        if len(inputs) != 1:
            raise ModelMismatch(f"expected one graph input, found {[i.name for i in inputs]}", file=model_path)
        t = inputs[0].type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        self._input = InputInfo(inputs[0].name, dims, f"tensor({_type_name(t.elem_type)})")
        self._output = g.output[0].name
        # Free each intermediate after its last reader: batch-32 activations are tens of MB each.
        last: dict[str, int] = {}
        for i, n in enumerate(self._nodes):
            for name in n.inputs:
                last[name] = i
        self._drop_after = [[] for _ in self._nodes]
        for name, i in last.items():
            if name not in self._consts and name != self._output:
                self._drop_after[i].append(name)
        log.info("reference backend: %d nodes, opset %d", len(self._nodes), self.opset)

    @property
    def input(self) -> InputInfo:
        return self._input

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._execute(batch, None)

    def trace_shapes(self, batch: np.ndarray) -> dict[str, tuple[int, ...]]:
        """Shapes of every tensor computed for ``batch``: exact where ONNX shape inference
        gives up (TF-style 'same' padding computed from Shape at run time)."""
        shapes: dict[str, tuple[int, ...]] = {k: tuple(v.shape) for k, v in self._consts.items()}
        self._execute(batch, shapes)
        return shapes

    def static_values(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Values of the computed tensors that depend only on the input's shape, not its data.

        With the batch size fixed these are constants (Shape chains, pads computed
        for TF-style 'same' padding); compilers that need static pads (TVM's
        Relax importer) get them folded in by ``fold_constants``.
        """
        static: dict[str, np.ndarray] = {}
        self._execute(batch, None, static)
        return static

    def _execute(self, batch: np.ndarray, shapes: dict | None, static: dict | None = None) -> np.ndarray:
        env: dict[str, Any] = dict(self._consts)
        env[self._input.name] = np.asarray(batch, dtype=np.float32)
        if shapes is not None:
            shapes[self._input.name] = tuple(batch.shape)
        for node, drop in zip(self._nodes, self._drop_after):
            args = [env[name] if name else None for name in node.inputs]
            try:
                result = self._ops[node.op](node, args)
            except (ValueError, IndexError, KeyError) as e:
                raise ModelMismatch(f"{node.op} node {node.name!r} failed: {e}") from None
            if isinstance(result, tuple):
                for name, value in zip(node.outputs, result):
                    env[name] = value
            else:
                env[node.outputs[0]] = result
                for extra in node.outputs[1:]:
                    env[extra] = None  # optional outputs such as Dropout's mask
            if static is not None and (node.op == "Shape" or all(not i or i in self._consts or i in static for i in node.inputs)):
                for name in node.outputs:
                    if env.get(name) is not None:
                        static[name] = env[name]
            if shapes is not None:
                for name in node.outputs:
                    if env.get(name) is not None:
                        shapes[name] = tuple(np.shape(env[name]))
            for name in drop:
                env.pop(name, None)
        return np.asarray(env[self._output], dtype=np.float32)

    def threads(self) -> int | None:
        return None  # numpy's BLAS decides; recorded as unknown rather than guessed


def _type_name(elem_type: int) -> str:
    np_type = _NP_TYPES.get(elem_type)
    return {np.float32: "float", np.float16: "float16", np.uint8: "uint8", np.int8: "int8"}.get(np_type, str(elem_type))


def fold_constants(model_path: Path, input_shape: tuple[int, ...]):
    """The model with every input-data-independent subgraph replaced by initializers, at a fixed input shape."""
    import onnx
    from onnx import numpy_helper

    ref = ReferenceBackend()
    ref.load(model_path, BackendOptions())
    static = ref.static_values(np.zeros(input_shape, dtype=np.float32))
    model = onnx.load(str(model_path))
    g = model.graph
    keep = [n for n in g.node if not all(o in static for o in n.output if o)]
    needed = {i for n in keep for i in n.input} | {o.name for o in g.output}
    have = {t.name for t in g.initializer}
    new_inits = [numpy_helper.from_array(np.asarray(static[name]), name) for name in sorted(needed & set(static)) if name not in have]
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    inp = next(i for i in g.input if i.name not in have)
    for d, v in zip(inp.type.tensor_type.shape.dim, input_shape):
        d.dim_value = v
    log.info("folded %d constant tensor(s); %d node(s) remain", len(new_inits), len(keep))
    return model
