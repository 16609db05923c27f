"""A fingerprint of an ONNX graph, so the scoreboard can tell which entries run the same model.

A fair comparison needs "the same mix of operations". Two exports of one
network differ in tensor names and node names, so the structure hash renames
every tensor canonically (graph inputs, then initializers and node outputs in
order of first use) and ignores names, doc strings and producer metadata.

- ``structure_sha256``: operators, their attributes and wiring, initializer
  dtypes and shapes; no weight values. Equal for fp32 re-exports of one
  architecture whatever the weights.
- ``weights_sha256``: initializer (and Constant tensor) values in canonical order.
- ``ops``: operator histogram; ``params``: elements of float/int8 initializers
  (shape constants of integer type excluded); ``macs_per_image``: multiply-
  accumulates of Conv, Gemm and MatMul at batch 1, from ONNX shape inference.

Uses only onnx 1.12-era APIs (shape_inference, numpy_helper, helper).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from packager.harness.errors import BackendUnavailable, ModelMismatch

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
_PARAM_KINDS = ("f", "i", "u")  # float, int8/uint8 (quantized weights); int64 shape tensors are excluded below


@dataclass(frozen=True)
class GraphFingerprint:
    version: int
    ops: dict[str, int]
    params: int
    macs_per_image: int | None
    structure_sha256: str
    weights_sha256: str
    opset: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "ops": dict(sorted(self.ops.items())),
            "params": self.params,
            "macs_per_image": self.macs_per_image,
            "structure_sha256": self.structure_sha256,
            "weights_sha256": self.weights_sha256,
            "opset": self.opset,
            "notes": list(self.notes),
        }


def fingerprint(model_path: Path) -> GraphFingerprint:
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailable(f"the graph fingerprint needs the onnx package: {e}") from None
    try:
        model = onnx.load(str(model_path))
    except Exception as e:
        raise ModelMismatch(f"cannot parse ONNX model: {e}", file=model_path) from None
    return fingerprint_model(model)


def fingerprint_model(model) -> GraphFingerprint:
    from onnx import helper, numpy_helper

    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    init_names = {t.name for t in g.initializer}
    canon: dict[str, str] = {"": ""}
    for i, inp in enumerate(x for x in g.input if x.name not in init_names):
        canon[inp.name] = f"in{i}"
    inits = {t.name: t for t in g.initializer}
    order: list[str] = []  # initializers in order of first use

    def name_of(tensor: str) -> str:
        if tensor not in canon:
            if tensor in inits:
                canon[tensor] = f"w{len(order)}"
                order.append(tensor)
            else:
                canon[tensor] = f"?{tensor}"  # a dangling input: keep it visible in the hash
        return canon[tensor]

    structure = []
    weights = hashlib.sha256()
    t = 0
    for node in g.node:
        ins = [name_of(x) for x in node.input]
        outs = []
        for o in node.output:
            canon[o] = f"t{t}" if o else ""
            t += 1
            outs.append(canon[o])
        attrs = []
        for a in sorted(node.attribute, key=lambda a: a.name):
            v = helper.get_attribute_value(a)
            if hasattr(v, "dims") and hasattr(v, "data_type"):  # a TensorProto (Constant's value)
                arr = numpy_helper.to_array(v)
                weights.update(_tensor_bytes(f"{outs[0]}.{a.name}", arr))
                v = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
            elif isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, (list, tuple)):
                v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
                if any(not isinstance(x, (int, float, str)) for x in v):
                    v = f"<{len(v)} {type(v[0]).__name__}>"
            elif not isinstance(v, (int, float, str)):
                v = f"<{type(v).__name__}>"
            attrs.append([a.name, v])
        structure.append([node.domain, node.op_type, ins, outs, attrs])
    params = 0
    shapes = []
    for name in order:
        arr = numpy_helper.to_array(inits[name])
        shapes.append([canon[name], str(arr.dtype), list(arr.shape)])
        weights.update(_tensor_bytes(canon[name], arr))
        if arr.dtype.kind in _PARAM_KINDS and arr.dtype.itemsize <= 4 and arr.ndim >= 1 and arr.dtype != np.int32:
            params += int(arr.size)
    io = [
        [canon.get(x.name, x.name), _type_repr(x)] for x in list(g.input) + list(g.output) if x.name not in init_names
    ]
    doc = {"version": FINGERPRINT_VERSION, "opset": opset, "nodes": structure, "initializers": shapes, "io": io}
    structure_sha = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    ops = Counter((f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in g.node)
    notes: list[str] = []
    macs = _macs(model, notes)
    return GraphFingerprint(FINGERPRINT_VERSION, dict(ops), params, macs, structure_sha, weights.hexdigest(), opset, notes)


def _tensor_bytes(name: str, arr: np.ndarray) -> bytes:
    head = json.dumps([name, str(arr.dtype), list(arr.shape)]).encode()
    return len(head).to_bytes(4, "big") + head + np.ascontiguousarray(arr).tobytes()


def _type_repr(vi) -> list:
    tt = vi.type.tensor_type
    return [tt.elem_type, [d.dim_value if d.HasField("dim_value") else "?" for d in tt.shape.dim]]


_MAC_OPS = ("Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")


def _unresolved(m, shapes: dict) -> bool:
    return any(n.op_type in _MAC_OPS and -1 in shapes.get(n.output[0], [-1]) for n in m.graph.node)


def _traced_shapes(model, notes: list[str]) -> dict | None:
    """Shapes from running the graph once on zeros at batch 1 with the numpy reference executor.

    Exports of TF-style 'same' padding compute Pad's pads from Shape at run time,
    which static shape inference cannot follow; executing the graph can.
    """
    import tempfile

    import onnx

    from packager.harness.backends.base import BackendOptions
    from packager.harness.backends.reference import ReferenceBackend

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            onnx.save(model, str(path))
            ref = ReferenceBackend()
            ref.load(path, BackendOptions())
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in ref.input.shape]
        return ref.trace_shapes(np.zeros(dims, dtype=np.float32))
    except Exception as e:  # an operator the reference lacks, a bad graph: MACs stay partial, with a note
        notes.append(f"shapes could not be traced with the reference executor: {e}")
        return None


def _macs(model, notes: list[str]) -> int | None:
    """Multiply-accumulates per image: shapes from ONNX shape inference with batch set to 1."""
    from onnx import shape_inference

    m = copy.deepcopy(model)
    init_names = {t.name for t in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1  # replaces the symbolic batch dim
    try:
        m = shape_inference.infer_shapes(m)
    except Exception as e:
        notes.append(f"shape inference failed: {e}")
        return None
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    if _unresolved(m, shapes):
        traced = _traced_shapes(model, notes)
        if traced:
            shapes.update({k: list(v) for k, v in traced.items()})
    total = 0
    unknown = 0
    for node in m.graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        w_index = 3 if node.op_type.startswith("QLinear") else 1
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[w_index])
        a = shapes.get(node.input[0])
        if node.op_type == "Gemm" and w and -1 not in w and (not out or -1 in out):
            # Gemm after a Reshape whose target shape is computed at run time: infer from the weight.
            total += int(np.prod(w))  # (K, N) or (N, K): one row per image
            continue
        if not out or not w or -1 in out or -1 in w:
            unknown += 1
            continue
        if "Conv" in node.op_type:
            total += int(np.prod(out[1:])) * int(np.prod(w[1:]))  # w is (M, C/group, kh, kw)
        else:
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            k = (a[-2] if trans_a else a[-1]) if a else -1
            if k == -1:
                unknown += 1
                continue
            total += int(np.prod(out)) * k
    if unknown:
        notes.append(f"{unknown} Conv/Gemm/MatMul node(s) without inferred shapes are not counted")
    return total
