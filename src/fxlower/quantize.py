"""Lower, then quantize: onnxruntime's static QDQ quantizer on a file fxlower lowered,
with the one-hot masks and the selections kept exact.

`fxlower.quantize_static` takes the arguments of `onnxruntime.quantization.quantize_static`
(QDQ format) and runs it, then pins the quantization parameters that the quantizer's
calibration would otherwise get wrong. One analysis of the float file decides three sets:

- **masks**: float tensors whose values are provably 0 or 1: a Cast of a boolean tensor,
  a constant holding only 0 and 1, a reshaping (Reshape, Unsqueeze, Squeeze, Transpose,
  Expand, Flatten, Tile) of a mask, a Mul of two masks. Calibration gives a mask the scale
  1/255 (or 1/127), whose dequantized "1" is not exactly 1; each mask's QuantizeLinear /
  DequantizeLinear pair is pinned to scale 1.0 and zero point 0, where 0 and 1 are exact in
  every 8-bit type.
- **selections**: a MatMul whose operand is one-hot along the contracted axis (a Cast of
  `Equal(x, c)` with c a constant of distinct values along that axis and x of size 1 there):
  each output element is one element of the other operand, or 0. Its output's
  QuantizeLinear / DequantizeLinear take the other operand's scale and zero point, so the
  selected values are exactly the quantized source values, as a quantized Gather passes
  them on (onnxruntime's QDQGather gives its output its input's parameters). A per-channel
  quantized source (a weight table under `per_channel=True`) is quantized per tensor here:
  its output would need per-channel parameters on an activation.
- **side channels**: float tensors computed from masks and constants alone (constants of
  integers and powers of two: never a table of values) that are not masks themselves (the packed keep bits and class codes of fxlower's exact NaN/inf/-0.0
  handling, counts). Their values are integers decoded by Floor and comparisons, which a
  quantizer step would flip; the nodes that produce or read them are added to
  `nodes_to_exclude` and run in float (an int8 model carries no NaN/inf: lower with
  `assume_finite=True` when the file is meant for int8, and they are not there at all).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import LoweringError

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
          onnx.TensorProto.BFLOAT16}
_BOOL_OPS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor",
             "Not", "IsNaN", "IsInf"}
_RESHAPING = {"Reshape", "Unsqueeze", "Squeeze", "Transpose", "Expand", "Flatten", "Tile",
              "Identity"}


@dataclass
class Analysis:
    masks: set[str] = field(default_factory=set)
    selections: dict[str, str] = field(default_factory=dict)  # MatMul output -> selected operand
    side: set[str] = field(default_factory=set)
    exclude: list[str] = field(default_factory=list)  # node names kept in float


@dataclass
class QuantizeSummary:
    """What `quantize_static` pinned: mask tensors at scale 1, selection outputs at their
    source's parameters, nodes kept in float (side channels)."""
    masks: list[str]
    selections: list[str]
    excluded_nodes: list[str]
    per_tensor_sources: list[str]


_READ_MAX = 1 << 22  # constants read here hold at most this many elements


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The constants the analysis reads: initializers stored in the file (not external
    data) of at most _READ_MAX elements, and Constant nodes. A larger one is no mask here
    (a 0/1 constant that large keeps its calibrated scale)."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
              if i.data_location != onnx.TensorProto.EXTERNAL
              and int(np.prod(i.dims, dtype=np.int64)) <= _READ_MAX}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return consts


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes only sharpen the one-hot proof
        inferred = model
    g = inferred.graph
    out: dict[str, list[int]] = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            out[v.name] = [d.dim_value for d in dims]
    for i in g.initializer:
        out[i.name] = list(i.dims)
    return out


def _distinct_axis(c: np.ndarray) -> int | None:
    """The one axis along which constant `c` varies, when its values are distinct there
    (counted from the right, as broadcasting aligns): -1 for shape [n], -3 for [n, 1, 1]."""
    big = [k for k, d in enumerate(c.shape) if d != 1]
    if len(big) != 1 or len(np.unique(c.reshape(-1))) != c.size:
        return None
    return big[0] - c.ndim


def _binary(v: np.ndarray) -> bool:
    """Every value an integer or a power of two (exactly: a mantissa of 0.5)."""
    f = v.astype(np.float64).reshape(-1)
    if not np.isfinite(f).all():
        return False
    return bool(((f == np.round(f)) | (np.frexp(np.abs(f))[0] == 0.5)).all())


def analyse(model: onnx.ModelProto) -> Analysis:
    """Masks, selections and side channels of a float ONNX model (see the module doc)."""
    g = model.graph
    consts = _constants(model)
    shapes = _shapes(model)
    producer = {o: n for n in g.node for o in n.output}
    bool_inputs = {v.name for v in g.input if v.type.tensor_type.elem_type == onnx.TensorProto.BOOL}
    bools: set[str] = set(bool_inputs) | {k for k, v in consts.items() if v.dtype == np.bool_}
    onehot: dict[str, int] = {}  # mask -> the axis (from the right) with at most one 1
    a = Analysis()
    for k, v in consts.items():
        if v.dtype.kind == "f" and v.size and np.isin(v, (0.0, 1.0)).all():
            a.masks.add(k)
    # constants a side channel is computed with: integers and powers of two (the packing
    # weights 2**j, the unpacking 2**-j, shapes, axes), never a table of values
    binary = {k for k, v in consts.items() if v.dtype.kind != "f" or _binary(v)}

    def onehot_axis(eq: onnx.NodeProto) -> int | None:
        for c_name, x_name in ((eq.input[1], eq.input[0]), (eq.input[0], eq.input[1])):
            c = consts.get(c_name)
            if c is None or x_name not in shapes:
                continue
            axis = _distinct_axis(c)
            x_shape = shapes[x_name]
            if axis is not None and -axis <= len(x_shape) and x_shape[axis] == 1:
                return axis
        return None

    for n in g.node:  # topological order: ONNX requires it
        ins = [i for i in n.input if i]
        if n.op_type in _BOOL_OPS or (n.op_type == "Cast" and helper.get_attribute_value(
                next(x for x in n.attribute if x.name == "to")) == onnx.TensorProto.BOOL):
            bools.update(n.output)
            continue
        if n.op_type == "Cast" and ins and ins[0] in bools:
            to = helper.get_attribute_value(next(x for x in n.attribute if x.name == "to"))
            if to in _FLOAT:
                a.masks.add(n.output[0])
                src = producer.get(ins[0])
                if src is not None and src.op_type == "Equal":
                    axis = onehot_axis(src)
                    if axis is not None:
                        onehot[n.output[0]] = axis
            continue
        if n.op_type in _RESHAPING and ins and ins[0] in a.masks:
            a.masks.add(n.output[0])
            continue
        if n.op_type == "Mul" and len(ins) == 2 and all(i in a.masks for i in ins):
            a.masks.add(n.output[0])
            continue
        if n.op_type == "MatMul" and len(ins) == 2:
            if onehot.get(ins[0]) == -1 and ins[1] not in a.masks | a.side:
                a.selections[n.output[0]] = ins[1]
                continue
            if onehot.get(ins[1]) == -2 and ins[0] not in a.masks | a.side:
                a.selections[n.output[0]] = ins[0]
                continue
        derived = [i for i in ins if i in a.masks or i in a.side]
        if derived and all(i in a.masks or i in a.side or i in binary for i in ins) \
                and n.op_type not in ("Shape", "Size"):
            a.side.update(o for o in n.output if o not in bools)
    # the conditions fxlower's exactness decides by: a NaN test (x == x) or a side channel
    scaffold = {n.output[0] for n in g.node if n.op_type == "Equal" and n.input[0] == n.input[1]}
    for n in g.node:
        if n.op_type in _BOOL_OPS and any(i in a.side or i in scaffold for i in n.input):
            scaffold.update(n.output)
    for n in g.node:
        if any(i in a.side for i in n.input) or any(o in a.side for o in n.output) \
                or (n.op_type == "Where" and n.input[0] in scaffold):
            a.exclude.append(n.name)
    return a


def _names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node named (the quantizer's exclusion list is by node name)."""
    used = {n.name for n in model.graph.node if n.name}
    for k, n in enumerate(model.graph.node):
        if not n.name:
            name = f"_fxl_node_{k}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)
    return model


def _pin(model: onnx.ModelProto, a: Analysis, summary: QuantizeSummary) -> None:
    """Rewrite the quantization parameters of masks (scale 1, zero point 0) and of selection
    outputs (their source's) in the quantized model."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producer = {o: n for n in g.node for o in n.output}

    def q_of(t: str) -> onnx.NodeProto | None:
        return next((c for c in consumers.get(t, []) if c.op_type == "QuantizeLinear"), None)

    def set_init(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    for m in sorted(a.masks):
        q = q_of(m)
        if q is None or q.input[1] not in inits:
            continue
        zp = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] in inits else None
        set_init(q.input[1], np.array(1.0, dtype=numpy_helper.to_array(inits[q.input[1]]).dtype))
        if zp is not None:
            set_init(q.input[2], np.zeros_like(zp))
        summary.masks.append(m)

    for y, src in sorted(a.selections.items()):
        q = q_of(y)
        if q is None or q.input[1] not in inits:
            continue
        # the selected operand as the quantized MatMul reads it: DequantizeLinear's output
        mm = producer[y]
        dq_src = next((producer.get(i) for i in mm.input
                       if producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                       and _origin(producer[i], producer) == src), None)
        if dq_src is None or dq_src.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[dq_src.input[1]])
        zp = numpy_helper.to_array(inits[dq_src.input[2]]) if len(dq_src.input) > 2 else None
        if scale.size != 1:
            summary.per_tensor_sources.append(src)
            continue
        set_init(q.input[1], scale.reshape(()).copy())
        if zp is not None and len(q.input) > 2 and q.input[2] in inits:
            set_init(q.input[2], zp.reshape(()).copy())
        summary.selections.append(y)


def _origin(dq: onnx.NodeProto, producer: dict[str, onnx.NodeProto]) -> str:
    """The float tensor a DequantizeLinear stands for: its QuantizeLinear's input, or, for a
    weight quantized offline, the initializer name the quantizer derived its own from."""
    q = producer.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        return str(q.input[0])
    return str(dq.input[0]).removesuffix("_quantized")


def calibration_reader(model: str | os.PathLike[str] | onnx.ModelProto, inputs: Iterable[Any]) -> Any:
    """An `onnxruntime.quantization.CalibrationDataReader` over calibration inputs: each
    a tuple of the model's positional inputs (tensors or arrays, in the file's input order)
    or a dict of feeds by input name."""
    from onnxruntime.quantization import CalibrationDataReader

    m = onnx.load(os.fspath(model), load_external_data=False) if not isinstance(model, onnx.ModelProto) else model
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]

    def feed(x: Any) -> dict[str, np.ndarray]:
        if isinstance(x, dict):
            return {k: np.asarray(v) for k, v in x.items()}
        return {n: (v.numpy() if hasattr(v, "numpy") else np.asarray(v))
                for n, v in zip(names, x, strict=False)}

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = (feed(x) for x in inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    return _Reader()


def quantize_static(model_input: str | os.PathLike[str] | onnx.ModelProto,
                    model_output: str | os.PathLike[str],
                    calibration_data_reader: Any = None,
                    **kwargs: Any) -> QuantizeSummary:
    """`onnxruntime.quantization.quantize_static` (QDQ) for a file fxlower lowered, with
    the masks and selections pinned exact (see the module doc). Takes the same arguments;
    `nodes_to_exclude` is extended with the side-channel nodes. Returns what was pinned."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if kwargs.get("quant_format", QuantFormat.QDQ) != QuantFormat.QDQ:
        raise LoweringError("fxlower.quantize_static writes the QDQ format only (quant_format="
                            "QuantFormat.QDQ); QOperator fuses the masks into integer kernels "
                            "whose parameters cannot be pinned afterwards")
    model = onnx.load(os.fspath(model_input)) if not isinstance(model_input, onnx.ModelProto) \
        else onnx.ModelProto.FromString(model_input.SerializeToString())
    _names(model)
    a = analyse(model)
    per_channel_sources = [s for s in a.selections.values() if s in {i.name for i in model.graph.initializer}]
    extra = dict(kwargs.pop("extra_options", None) or {})
    if kwargs.get("per_channel") and per_channel_sources:
        overrides = dict(extra.get("TensorQuantOverrides", {}))
        for s in per_channel_sources:  # a selected table is quantized per tensor, as Gather's is
            overrides.setdefault(s, [{}])  # [{}]: per tensor, the rest as asked
        extra["TensorQuantOverrides"] = overrides
    exclude = list(kwargs.pop("nodes_to_exclude", None) or []) + a.exclude
    ort_quantize_static(model, model_output, calibration_data_reader,
                        nodes_to_exclude=exclude, extra_options=extra, **kwargs)
    quantized = onnx.load(os.fspath(model_output))
    summary = QuantizeSummary([], [], list(a.exclude), [])
    _pin(quantized, a, summary)
    onnx.save(quantized, os.fspath(model_output))
    return summary

