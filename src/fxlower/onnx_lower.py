"""ONNX in, ONNX out: lower the gather and scatter nodes of a file fxlower did not make.

Surgical: each Gather / GatherElements / GatherND / Scatter / ScatterElements / ScatterND
node (with a target: each of these its profile forbids) is replaced by the formulation the
PyTorch path uses, and nothing else changes: every other node, initializer, name, opset
import, metadata field and output stays as it was (inputs whose symbolic dims were bound
by `input_shapes` get those static dims).

One implementation of each formulation. A node is turned back into the PyTorch op it
means at its static shapes (`_semantics`: Gather is `data[..., idx]` along its axis,
GatherElements `torch.gather` of wrapped indices, GatherND advanced indexing with the
batch dims as constant aranges, ScatterElements `scatter`/`scatter_reduce`, ScatterND
`index_put`); constant inputs (initializers, Constant nodes, shape arithmetic folded
here) become buffers, so the passes see them as constants (slices, folded lookups). That
small module is lowered and verified by `fxlower.lower`, exported by torch's exporter,
brought to the file's opset (`_to_opset`) and spliced in under the node's own input and
output names. A node whose inputs are all constant is folded into one initializer
(computed by onnx's reference evaluator, the ONNX semantics themselves).

Legality per node (each a reason in the report; a refused node stays as it was):
1. the node is in the main graph (nodes inside If/Loop/Scan bodies are refused by name);
2. its input shapes are static once `input_shapes` binds the inputs' symbolic dims;
3. the op's attributes have a lowering (ScatterND/ScatterElements `reduction` none or add
   on any dtype; mul/max/min are refused by name);
4. `fxlower.lower` lowers the small module without a forbidden op remaining (its passes'
   own legality and verification apply, their skip reasons are quoted).

Verification: onnxruntime runs the input file and the output file on fresh inputs
(integers feeding an index drawn valid for the smallest dimension they index, other
integers in [0, 2)), compared as `fxlower.verify.compare` does; a mismatch is bisected to
the node whose replacement causes it, which is then left out (and reported).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from . import progress
from .errors import FxlowerError, LoweringError, OnnxCheckError, VerificationError

GATHER_OPS = ("Gather", "GatherElements", "GatherND")
SCATTER_OPS = ("Scatter", "ScatterElements", "ScatterND")
FAMILY = GATHER_OPS + SCATTER_OPS
_SUBGRAPH_OPS = ("If", "Loop", "Scan")
_EXPORT_MIN_OPSET = 18  # torch's exporter writes opset 18 and newer
_MIN_OPSET = 13
_FOLD_MAX = 1 << 20  # constant values folded here hold at most this many elements
_TWO_GB = 2**31 - 1
_INT8_16 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
            onnx.TensorProto.UINT16)
_BIG_CONST = 1 << 22  # a constant gather source of more elements is a run-time input (see _plan_node)


# ---------------------------------------------------------------------------- the report


@dataclass
class NodeResult:
    name: str
    op_type: str
    status: str  # "lowered" | "folded" | "refused" | "kept" (the target runs it)
    detail: str = ""  # the formulation(s), or why it was refused
    macs: int = 0
    mask_elems: int = 0


@dataclass
class OnnxReport:
    source: str
    opset: int
    nodes: list[NodeResult] = field(default_factory=list)
    bound: dict[str, list[int]] = field(default_factory=dict)  # inputs given static shapes
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    remaining: list[str] = field(default_factory=list)  # forbidden nodes left, with the reason
    external_data: bool = False  # the input kept tensors in external data files
    data_dir: str | None = None  # the model returned still reads tensors from files here

    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as data, schema `fxlower-report/1` (input "onnx"; fxlower.report)."""
        from .report import SCHEMA_ID, _json_safe

        return cast(dict[str, Any], _json_safe({
            "schema": SCHEMA_ID, "input": "onnx", "source": self.source, "opset": self.opset,
            "bound": dict(self.bound),
            "nodes": [{"node": r.name, "op": r.op_type, "status": r.status, "detail": r.detail,
                       "macs": r.macs, "mask_elems": r.mask_elems} for r in self.nodes],
            "ops_before": dict(self.ops_before), "ops_after": dict(self.ops_after),
            "remaining": list(self.remaining), "verification": dict(self.verification),
            "external_data": self.external_data, "seconds": dict(self.seconds),
        }))

    def format(self) -> str:
        """The text form, rendered from `to_dict()`."""
        return render(self.to_dict())


def render(d: dict[str, Any]) -> str:
    """The text form of an ONNX report's data (`OnnxReport.to_dict()`)."""
    lines = [f"{d['source']} (opset {d['opset']}): {len(d['nodes'])} gather/scatter node(s)"]
    if d["bound"]:
        lines.append("  bound: " + ", ".join(
            f"{k}={','.join(map(str, v))}" for k, v in d["bound"].items()))
    for r in d["nodes"]:
        cost = (f" [{r['macs']:,} MACs, mask {r['mask_elems']:,}]"
                if r["macs"] or r["mask_elems"] else "")
        lines.append(f"  {r['status']:8} {r['op']} '{r['node']}': {r['detail']}{cost}")
    before, after = d["ops_before"], d["ops_after"]
    changed = sorted(set(before) | set(after))
    diff = [f"{op} {before.get(op, 0)} -> {after.get(op, 0)}"
            for op in changed if before.get(op, 0) != after.get(op, 0)]
    if diff:
        lines.append("  op counts: " + ", ".join(diff))
    if d["verification"]:
        lines.append("  verification: " + ", ".join(
            f"{k}={v}" for k, v in d["verification"].items()))
    if d["remaining"]:
        lines.append("  remaining: " + "; ".join(d["remaining"]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- reading


def load(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, str | None]:
    """Read an ONNX file, leaving its external data where it is: every location must lie
    in the file's folder (one that leaves it is refused, never opened) and exist. Returns
    the model and that folder when the model keeps tensors outside (their values are read
    from there, mapped, only when needed: `_array`)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    shown = os.fspath(path)
    if os.path.isdir(path):
        raise OnnxCheckError(f"{shown}: is a directory, not an ONNX file")
    if not os.path.isfile(path):
        raise OnnxCheckError(f"{shown}: no such file")
    try:
        model = onnx.load(shown, format="protobuf", load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any decoding failure: not an ONNX file
        raise OnnxCheckError(f"{shown}: not an ONNX file ({type(e).__name__})") from e
    if not model.HasField("graph"):
        raise OnnxCheckError(f"{shown}: not an ONNX model (no graph)")
    base = os.path.realpath(os.path.dirname(os.path.abspath(shown)))
    external = False
    for t in _get_all_tensors(model):
        if not uses_external_data(t):
            continue
        external = True
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        real = os.path.realpath(os.path.join(base, loc))
        if os.path.isabs(loc) or os.path.commonpath([base, real]) != base:
            raise OnnxCheckError(f"{shown}: initializer '{t.name}' keeps its data at '{loc}', "
                                "outside the model's folder: refused")
        if not os.path.isfile(real):
            raise OnnxCheckError(f"{shown}: initializer '{t.name}': external data file '{loc}' "
                                "is missing")
    return model, base if external else None


def _array(t: onnx.TensorProto, base: str | None) -> np.ndarray:
    """An initializer's value; external data is mapped from its file (copy-on-write: read
    lazily, never written back), not read into memory."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if base is None or not uses_external_data(t):
        return numpy_helper.to_array(t)
    info = ExternalDataInfo(t)
    dtype = _np_dtype(t.data_type).newbyteorder("<")
    shape = tuple(int(d) for d in t.dims)
    path = os.path.join(base, info.location)
    if _numel(shape) <= 1024:
        return np.fromfile(path, dtype=dtype, count=_numel(shape),
                           offset=info.offset or 0).reshape(shape)
    return np.memmap(path, dtype=dtype, mode="c", offset=info.offset or 0, shape=shape)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _np_dtype(elem_type: int) -> np.dtype[Any]:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _dims(tt: onnx.TypeProto.Tensor) -> list[int | str | None]:
    if not tt.HasField("shape"):
        return [None]  # unknown rank
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tt.shape.dim]


def _bind_inputs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]
                 ) -> dict[str, list[int]]:
    """Give the inputs named in `input_shapes` those static dims (in place); returns them."""
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name: i for i in model.graph.input if i.name not in inits}
    bound: dict[str, list[int]] = {}
    for name, dims in input_shapes.items():
        vi = graph_inputs.get(name)
        if vi is None:
            raise FxlowerError(f"--input-shape {name}: the model has no input named '{name}' "
                                f"(its inputs: {', '.join(graph_inputs) or 'none'})")
        old = _dims(vi.type.tensor_type)
        if old != [None] and len(old) != len(dims):
            raise FxlowerError(f"--input-shape {name}: {len(dims)} dims given, the input has "
                                f"rank {len(old)}")
        for i, (o, d) in enumerate(zip(old, dims, strict=False)):
            if isinstance(o, int) and o and o != d:
                raise FxlowerError(f"--input-shape {name}: dim {i} is {o} in the model, not {d}")
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            shape.dim.add().dim_value = int(d)
        bound[name] = [int(d) for d in dims]
    return bound


Shapes = dict[str, tuple[list[int | str | None], int]]  # tensor -> (dims, elem_type)
_INT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def _analyse(model: onnx.ModelProto, base: str | None) -> tuple[Shapes, _Consts]:
    """Shapes and the values known when lowering. ONNX shape inference loses static dims
    behind shape arithmetic (Shape -> Gather -> Concat -> Expand/Reshape); so integer
    tensors whose values `_Consts` computes are given to the next round of inference as
    constants, until nothing new is learnt (the model itself is not changed)."""
    folded: dict[str, np.ndarray] = {}
    for _ in range(6):
        shapes = _infer(model, folded, base)
        consts = _Consts(model, shapes, base)
        new = {}
        for n in model.graph.node:
            if n.op_type == "Constant" or n.domain not in ("", "ai.onnx"):
                continue
            if all(o in folded for o in n.output if o):
                continue
            for o in n.output:
                if o and shapes.get(o, ([None], 0))[1] in _INT_TYPES:
                    v = consts.value(o)
                    if v is not None:
                        new[o] = v
        if not new:
            break
        folded.update(new)
    return shapes, consts


def _infer(model: onnx.ModelProto, folded: Mapping[str, np.ndarray], base: str | None
           ) -> Shapes:
    """Every tensor's (dims, elem_type) from ONNX shape inference, run on a light copy whose
    large initializers are declared as typed inputs instead (a >2 GB model infers too) and
    whose nodes computing only `folded` values are those values."""
    from .check import light_copy

    nodes, known = [], []
    for n in model.graph.node:
        outs = [o for o in n.output if o]
        if outs and all(o in folded for o in outs):
            known += [numpy_helper.from_array(np.asarray(folded[o]), o) for o in outs]
        else:
            nodes.append(n)
    light = light_copy(model, lambda t: None if _numel(t.dims) > 1024 else (
        numpy_helper.from_array(_array(t, base), t.name) if base is not None else t),
        nodes=nodes, extra=known)
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    out: dict[str, tuple[list[int | str | None], int]] = {}
    ig = inferred.graph
    for vi in list(ig.input) + list(ig.value_info) + list(ig.output):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = (_dims(vi.type.tensor_type), vi.type.tensor_type.elem_type)
    for t in list(model.graph.initializer) + known:
        out[t.name] = (list(t.dims), t.data_type)
    return out


def _numel(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


class _Consts:
    """The values known when lowering: initializers, Constant nodes, Shape/Size of static
    tensors, and small deterministic nodes of known inputs (evaluated lazily by onnx's
    reference evaluator, at the file's opset)."""

    _NONDET = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout"} | set(_SUBGRAPH_OPS)

    def __init__(self, model: onnx.ModelProto, shapes: Shapes, base: str | None) -> None:
        self.g, self.base = model.graph, base
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.shapes = shapes
        inputs = {i.name for i in self.g.input}  # an initializer listed as an input is a
        self.init = {t.name: t for t in self.g.initializer if t.name not in inputs}  # default
        self.producer = {o: n for n in self.g.node for o in n.output if o}
        self.memo: dict[str, np.ndarray | None] = {}

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        if name in self.memo:
            return self.memo[name]
        v = self._value(name, depth)
        self.memo[name] = v
        return v

    def _value(self, name: str, depth: int) -> np.ndarray | None:
        if name in self.init:
            return _array(self.init[name], self.base)
        n = self.producer.get(name)
        if n is None or depth > 200 or n.domain not in ("", "ai.onnx"):
            return None
        if n.op_type == "Constant":
            return _eval(n, [], self.opsets)[0]
        if n.op_type in ("Shape", "Size"):
            dims, _ = self.shapes.get(n.input[0], ([None], 0))
            if not all(isinstance(d, int) for d in dims):
                return None
            if n.op_type == "Size":
                return np.array(_numel([int(d) for d in dims if d is not None]), dtype=np.int64)
            a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
            return np.array(dims, dtype=np.int64)[a.get("start", 0):a.get("end", None)]
        if n.op_type in self._NONDET:
            return None
        out_dims = self.shapes.get(name, ([None], 0))[0]
        if not all(isinstance(d, int) for d in out_dims) or _numel(
                [int(d) for d in out_dims if d is not None]) > _FOLD_MAX:
            return None
        ins: list[np.ndarray | None] = []
        for i in n.input:
            if not i:
                ins.append(None)
                continue
            v = self.value(i, depth + 1)
            if v is None:
                return None
            ins.append(v)
        try:
            outs = _eval(n, ins, self.opsets)
        except Exception:  # noqa: BLE001 - an op the reference evaluator lacks: not known
            return None
        for o, v in zip(n.output, outs, strict=False):
            self.memo[o] = v
        return self.memo.get(name)


def _eval(node: onnx.NodeProto, inputs: list[np.ndarray | None], opsets: dict[str, int]
          ) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    one = helper.make_node(node.op_type, names, [f"o{k}" for k in range(len(node.output))],
                           domain=node.domain)
    one.attribute.extend(node.attribute)
    ev = ReferenceEvaluator(one, opsets=opsets)
    feeds = {n: v for n, v in zip(names, inputs, strict=True) if n}
    return [np.asarray(o) for o in ev.run(None, feeds)]


# ---------------------------------------------------------------------------- semantics


def _finite(v: np.ndarray) -> bool:
    """No NaN, inf or -0.0 (what `passes/_common.known_finite` asks of a parameter)."""
    if not np.issubdtype(v.dtype, np.floating):
        return True
    flat = v.reshape(-1)
    for i in range(0, flat.size, 1 << 22):  # in chunks: a mapped table is never read whole
        c = flat[i:i + (1 << 22)]
        if not np.isfinite(c).all() or ((c == 0) & np.signbit(c)).any():
            return False
    return True


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


Semantics = tuple[Callable[..., torch.Tensor], list[torch.Tensor]]


def _semantics(op: str, attrs: dict[str, Any], shapes: list[list[int]]) -> Semantics | str:
    """The PyTorch op an ONNX node means at these static input shapes, as a function of its
    inputs (data, indices[, updates]) followed by the constants it needs besides them (the
    batch dims' aranges of GatherND); or why it has none."""
    reduction = str(attrs.get("reduction", "none"))
    rank = len(shapes[0])
    axis = int(attrs.get("axis", 0))
    if axis < 0:
        axis += rank
    n = shapes[0][axis] if rank else 1

    def wrap(i: torch.Tensor) -> torch.Tensor:  # ONNX allows [-n, n); torch.gather [0, n)
        i = i.long()
        return torch.where(i < 0, i + n, i)

    if op == "Gather":
        def gather(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return x[(slice(None),) * axis + (i.long(),)]  # advanced indexing wraps like ONNX
        return gather, []
    if op == "GatherElements":
        return (lambda x, i: torch.gather(x, axis, wrap(i))), []
    if op in ("ScatterElements", "Scatter"):
        if reduction == "none":
            return (lambda x, i, u: torch.scatter(x, axis, wrap(i), u)), []
        if reduction == "add":
            return (lambda x, i, u: torch.scatter_add(x, axis, wrap(i), u)), []
        return f"reduction '{reduction}' has no exact lowering here (none and add do)"
    b = int(attrs.get("batch_dims", 0))
    if op == "GatherND":
        k = shapes[1][-1]
        lead = len(shapes[1]) - 1  # rank of the index's batch + lookup dims

        def gather_nd(x: torch.Tensor, i: torch.Tensor, *batch: torch.Tensor) -> torch.Tensor:
            i = i.long()
            return x[tuple(batch) + tuple(i[..., t] for t in range(k))]

        aranges = [torch.arange(shapes[1][j]).reshape([1] * j + [-1] + [1] * (lead - j - 1))
                   for j in range(b)]
        return gather_nd, aranges
    if op == "ScatterND":
        if reduction not in ("none", "add"):
            return f"reduction '{reduction}' has no exact lowering here (none and add do)"
        k = shapes[1][-1]

        def scatter_nd(x: torch.Tensor, i: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            i = i.long()
            return x.index_put(tuple(i[..., t] for t in range(k)), u,
                               accumulate=reduction == "add")
        return scatter_nd, []
    return f"{op} is not a gather or scatter op"


class _NodeModule(torch.nn.Module):
    """One ONNX node as a module: constant inputs are non-persistent buffers `c<k>`, the
    run-time inputs its forward's arguments (`forward(r0, r1, ...)`, generated per arity so
    the tracers see plain positional inputs)."""

    def __init__(self, sem: Semantics, consts: dict[int, torch.Tensor], n_inputs: int) -> None:
        super().__init__()
        self.fn, extra = sem
        self.n_inputs = n_inputs
        self.const_pos = sorted(consts)
        for k, t in consts.items():
            self.register_buffer(f"c{k}", t, persistent=False)
        for j, t in enumerate(extra):
            self.register_buffer(f"batch{j}", t, persistent=False)
        self.n_extra = len(extra)

    def call(self, runtime: tuple[torch.Tensor, ...]) -> torch.Tensor:
        it = iter(runtime)
        ins = [getattr(self, f"c{k}") if k in self.const_pos else next(it)
               for k in range(self.n_inputs)]
        extra = [getattr(self, f"batch{j}") for j in range(self.n_extra)]
        return self.fn(*ins, *extra)


class _Node1(_NodeModule):
    def forward(self, r0: torch.Tensor) -> torch.Tensor:
        return self.call((r0,))


class _Node2(_NodeModule):
    def forward(self, r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
        return self.call((r0, r1))


class _Node3(_NodeModule):
    def forward(self, r0: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
        return self.call((r0, r1, r2))


class _Node0(_NodeModule):
    def forward(self) -> torch.Tensor:
        return self.call(())


_BY_ARITY = {0: _Node0, 1: _Node1, 2: _Node2, 3: _Node3}


def _example(dims: list[int], np_dtype: np.dtype[Any], index_range: int | None,
             gen: torch.Generator) -> torch.Tensor:
    """An example input: indices span [-n, n-1] (ends included, so verification's draws,
    uniform in the example's range, cover every valid index), floats normal, ints small."""
    dtype = torch.from_numpy(np.zeros((), dtype=np_dtype)).dtype
    if index_range is not None:
        n = index_range
        t = torch.randint(-n, n, dims, generator=gen)
        flat = t.reshape(-1)
        if flat.numel() >= 2:
            flat[0], flat[-1] = -n, n - 1
        return t.to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, dims, generator=gen).bool()
    if dtype.is_floating_point:
        return torch.randn(dims, generator=gen).to(dtype)
    return torch.randint(0, 5, dims, generator=gen).to(dtype)


# ---------------------------------------------------------------------------- splicing


@dataclass
class _Replacement:
    index: int  # the replaced node's position in the graph
    node: onnx.NodeProto
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    result: NodeResult


def _to_opset(sub: onnx.ModelProto, opset: int) -> None:
    """Bring an opset-18 export down to `opset` (13..17), in place: the reductions other than
    ReduceSum took `axes` as an attribute before 18; an attribute that did not exist yet
    (Reshape's allowzero=0, Cast's saturate) is dropped while it has its old default."""
    if opset >= _EXPORT_MIN_OPSET:
        return
    inits = {t.name: t for t in sub.graph.initializer}
    consts = {n.output[0]: n for n in sub.graph.node if n.op_type == "Constant"}
    for n in sub.graph.node:
        if n.op_type.startswith("Reduce") and n.op_type != "ReduceSum" and len(n.input) > 1:
            axes_name = n.input[1]
            if axes_name in inits:
                axes = numpy_helper.to_array(inits[axes_name])
            elif axes_name in consts:
                axes = _eval(consts[axes_name], [], {"": _EXPORT_MIN_OPSET})[0]
            elif axes_name == "":
                axes = None
            else:
                raise LoweringError(f"{n.op_type} with run-time axes cannot be written at "
                                    f"opset {opset}")
            del n.input[1:]
            if axes is not None:
                n.attribute.append(helper.make_attribute("axes", [int(a) for a in axes]))
        for a in list(n.attribute):
            if n.op_type == "Cast" and a.name == "saturate" and opset < 19:
                n.attribute.remove(a)  # only float8 targets saturate; none is written here
            elif n.op_type == "Reshape" and a.name == "allowzero" and opset < 14:
                shape = (numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits
                         else _eval(consts[n.input[1]], [], {"": _EXPORT_MIN_OPSET})[0]
                         if n.input[1] in consts else None)
                if shape is None or (helper.get_attribute_value(a) and (shape == 0).any()):
                    raise LoweringError(f"Reshape with allowzero cannot be written at opset "
                                        f"{opset}")
                n.attribute.remove(a)  # no 0 in the shape: allowzero changes nothing
    for o in sub.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset


def _export_sub(mod: torch.nn.Module, inputs: tuple[torch.Tensor, ...], opset: int
                ) -> onnx.ModelProto:
    import contextlib
    import io
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(mod, inputs, dynamo=True, verbose=False,
                                 opset_version=max(opset, _EXPORT_MIN_OPSET),
                                 input_names=[f"r{k}" for k in range(len(inputs))],
                                 output_names=["out"])
    assert prog is not None
    sub = prog.model_proto
    if sub.functions:
        from onnx import inliner

        sub = inliner.inline_local_functions(sub)
    _to_opset(sub, opset)
    return sub


def _splice(sub: onnx.ModelProto, node: onnx.NodeProto, runtime: list[str],
            consts: set[int], prefix: str) -> tuple[list[onnx.NodeProto],
                                                          list[onnx.TensorProto]]:
    """The exported subgraph under the node's names: inputs r<k> are its run-time inputs,
    buffers c<k> its constant inputs (already in the file: never copied), `out` its output;
    every other name gets `prefix`."""
    rename = {f"r{k}": name for k, name in enumerate(runtime)}
    rename.update({f"c{k}": node.input[k] for k in consts})
    rename["out"] = node.output[0]
    rename[""] = ""

    def nm(x: str) -> str:
        return rename.get(x, f"{prefix}{x}")

    nodes = []
    for n in sub.graph.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        del m.input[:]
        m.input.extend(nm(i) for i in n.input)
        del m.output[:]
        m.output.extend(nm(o) for o in n.output)
        m.name = f"{prefix}{n.name or n.op_type}"
        if m.domain == "ai.onnx":
            m.domain = ""
        nodes.append(m)
    inits = []
    for t in sub.graph.initializer:
        if t.name in rename and t.name.startswith("c"):
            continue  # a constant input of the node: the file already holds it
        u = onnx.TensorProto()
        u.CopyFrom(t)
        u.name = nm(t.name)
        inits.append(u)
    return nodes, inits


# ---------------------------------------------------------------------------- lowering


def _plan_node(index: int, node: onnx.NodeProto, consts: _Consts, shapes: Shapes,
               inputs_static: bool, opset: int, lower_kwargs: dict[str, Any], prefix: str,
               cache: dict[str, tuple[onnx.ModelProto, NodeResult]]) -> _Replacement | NodeResult:
    """The replacement of one node, or its NodeResult saying why it stays: whatever goes
    wrong with one node (a dtype torch cannot compute in, an exporter failure) refuses that
    node with the cause, never the file."""
    import contextlib
    import io

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # torch.fx prints failing forwards
            return _plan_node_unguarded(index, node, consts, shapes, inputs_static, opset,
                                        lower_kwargs, prefix, cache)
    except Exception as e:  # noqa: BLE001 - named in the report, the node kept
        first = (str(e).strip().splitlines() or [""])[0]
        return NodeResult(node.name or node.output[0], node.op_type, "refused",
                          f"cannot be lowered here: {type(e).__name__}: {first}")


def _plan_node_unguarded(index: int, node: onnx.NodeProto, consts: _Consts, shapes: Shapes,
                         inputs_static: bool, opset: int, lower_kwargs: dict[str, Any],
                         prefix: str, cache: dict[str, tuple[onnx.ModelProto, NodeResult]]
                         ) -> _Replacement | NodeResult:
    from .api import lower, report_of

    name = node.name or node.output[0]
    res = NodeResult(name, node.op_type, "refused")
    ins = [i for i in node.input]
    dims: list[list[int]] = []
    types: list[int] = []
    for i in ins:
        d, t = shapes.get(i, ([None], 0))
        if not all(isinstance(x, int) for x in d) or not t:
            res.detail = (f"the shape of its input '{i}' is not static ({d}): " + (
                "it depends on the data (NonZero, a data-dependent Range or Resize), "
                "whatever the input shapes" if inputs_static else
                "bind the model's symbolic input dims with --input-shape NAME=D0,D1,..."))
            return res
        dims.append([x for x in d if isinstance(x, int)])
        types.append(t)
    attrs = _attrs(node)
    values = [consts.value(i) for i in ins]
    if all(v is not None for v in values):  # every input known: one constant
        try:
            out = _eval(node, list(values), consts.opsets)[0]
        except Exception as e:  # noqa: BLE001
            res.detail = f"constant inputs, but evaluating it failed: {e}"
            return res
        t = numpy_helper.from_array(out, node.output[0])
        return _Replacement(index, node, [], [t], NodeResult(
            name, node.op_type, "folded",
            f"every input is known when lowering: one constant of {out.size:,} values"))
    sem = _semantics(node.op_type, attrs, dims)
    if isinstance(sem, str):
        res.detail = sem
        return res
    const_pos = {k: v for k, v in enumerate(values) if v is not None}
    big: dict[int, np.ndarray] = {}
    kwargs = dict(lower_kwargs)
    if node.op_type in GATHER_OPS and 0 in const_pos and const_pos[0].size > _BIG_CONST:
        # a large constant table is read as an input of the small module, so no copy of it
        # is traced, exported or hashed; what the passes would learn from it as a constant
        # (its finiteness: no NaN/inf/-0.0 code path) is computed here, for its only float
        big[0] = const_pos.pop(0)  # source, the data
        kwargs["assume_finite"] = kwargs["assume_finite"] or _finite(big[0])
    elif node.op_type in GATHER_OPS and 0 not in const_pos and _finite_dequantized(ins[0], consts):
        kwargs["assume_finite"] = True  # integers times a finite scale: no NaN/inf/-0.0
    runtime = [ins[k] for k in range(len(ins)) if k not in const_pos]
    key = hashlib.sha1(repr((node.op_type, sorted(attrs.items()), dims, types, opset,
                             sorted(kwargs.items()))).encode())
    for k, v in sorted(const_pos.items()):
        key.update(str(k).encode() + np.ascontiguousarray(v).tobytes())
    digest = key.hexdigest()
    if digest not in cache:
        gen = torch.Generator().manual_seed(0)
        axis = int(attrs.get("axis", 0)) % max(1, len(dims[0]))
        n_index = (dims[0][axis] if node.op_type in ("Gather", "GatherElements",
                                                     "ScatterElements", "Scatter") else None)
        examples: list[torch.Tensor] = []
        consts_t: dict[int, torch.Tensor] = {}
        draws: list[list[torch.Tensor]] = [[], []]  # verification's runs besides the example
        for k, (d_k, t) in enumerate(zip(dims, types, strict=True)):
            rng = None
            if k == 1:
                if n_index is not None:
                    rng = n_index
                else:  # GatherND / ScatterND: the smallest dim an index column addresses
                    b = int(attrs.get("batch_dims", 0))
                    rng = min(dims[0][b:b + d_k[-1]] or [1])
            if k in const_pos:
                consts_t[k] = torch.from_numpy(np.array(const_pos[k]))
            elif k in big:  # the file's own table, mapped: every run reads it, none copies it
                table = torch.from_numpy(np.asarray(big[k]))
                examples.append(table)
                for run in draws:
                    run.append(table)
            else:
                examples.append(_example(d_k, _np_dtype(t), rng, gen))
                for run in draws:
                    run.append(_example(d_k, _np_dtype(t), rng, gen))
        cls = _BY_ARITY[len(examples)]
        mod = cls(sem, consts_t, len(ins)).eval()
        try:
            lowered = lower(mod, tuple(examples), tracer="export", on_forbidden="warn",
                            verify_inputs=[tuple(run) for run in draws], **kwargs)
        except Exception as e:  # noqa: BLE001 - the PyTorch path refused: say why
            res.detail = f"fxlower.lower refused it: {e}"
            return res
        rep = report_of(lowered)
        if rep.remaining:
            reasons = [s.reason for s in rep.skipped if s.reason != "switched off"]
            reasons += [f"rolled back: {r}" for r in rep.rolled_back]
            res.detail = "not lowered" + (f": {'; '.join(reasons)}" if reasons else "")
            return res
        try:
            sub = _export_sub(lowered, tuple(examples), opset)
        except Exception as e:  # noqa: BLE001
            res.detail = f"the lowered node does not export at opset {opset}: {e}"
            return res
        detail = "; ".join(f"{a.pass_name}: {a.detail}" for a in rep.applied) or "rewritten"
        cache[digest] = (sub, NodeResult(name, node.op_type, "lowered", detail,
                                         sum(a.macs for a in rep.applied),
                                         sum(a.mask_elems for a in rep.applied)))
    sub, proto = cache[digest]
    nodes, inits = _splice(sub, node, runtime, set(const_pos), prefix)
    result = copy.copy(proto)
    result.name = name
    return _Replacement(index, node, nodes, inits, result)


def _finite_dequantized(name: str, consts: _Consts) -> bool:
    """Whether `name` is a DequantizeLinear output whose scale (and zero point, if given) is
    a known constant, the scale finite and positive: its values are integers times that
    scale, finite and never -0.0 ((q - zp) is an integer, +0 when q == zp)."""
    n = consts.producer.get(name)
    if n is None or n.op_type != "DequantizeLinear" or n.domain not in ("", "ai.onnx"):
        return False
    scale = consts.value(n.input[1])
    if scale is None or (len(n.input) > 2 and n.input[2] and consts.value(n.input[2]) is None):
        return False
    s = np.asarray(scale, dtype=np.float64)
    return bool(np.isfinite(s * 2.0**32).all() and (s > 0).all())


def _dequantize_first(m: onnx.ModelProto, consts: _Consts, tgt: Any) -> int:
    """Gather of an integer table followed by a per-tensor DequantizeLinear (its only
    consumer) is read as the Gather of the dequantized table: dequantizing is elementwise
    with one scale, so the values are the same, and the lowering then selects from the
    integer table the file holds (no float copy of it). Only for Gathers `tgt` does not
    run. Returns how many were rewritten."""
    g = m.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    done = 0
    for gather in list(g.node):
        if gather.op_type != "Gather" or gather.domain not in ("", "ai.onnx") or \
                tgt.allows("Gather") or gather.output[0] in outputs:
            continue
        table = consts.init.get(gather.input[0])
        users = consumers.get(gather.output[0], [])
        if table is None or table.data_type not in _INT8_16 or len(users) != 1 or \
                users[0].op_type != "DequantizeLinear":
            continue
        dq = users[0]
        scale = consts.value(dq.input[1])
        if scale is None or scale.size != 1 or not _finite_dequantized(dq.output[0], consts):
            continue
        table_f = dq.output[0] + "_fxl_table"
        first = helper.make_node("DequantizeLinear", [gather.input[0], *dq.input[1:]], [table_f],
                                 name=(dq.name or dq.output[0]) + "_fxl_first")
        first.attribute.extend(a for a in dq.attribute if a.name != "axis")
        gather.input[0] = table_f
        gather.output[0] = dq.output[0]
        nodes = [n for n in g.node if n is not dq]
        at = next(k for k, n in enumerate(nodes) if n is gather)
        nodes.insert(at, first)
        del g.node[:]
        g.node.extend(nodes)
        consts.producer[table_f] = first
        consts.producer[dq.output[0]] = gather
        done += 1
    return done


def _qdq_selections(model: onnx.ModelProto, tgt: Any) -> onnx.ModelProto:
    """The QDQ form of each selection from a dequantized table (a MatMul of a one-hot mask
    and a DequantizeLinear output, see `fxlower.quantize.analyse`): the mask goes through
    QuantizeLinear/DequantizeLinear at scale 1, zero point 0 (uint8; 0 and 1 exact), so a
    QDQ-aware compiler (and onnxruntime) runs the product as an integer MatMul on the int8
    table. The product's output keeps the form the file gave the Gather's (a QuantizeLinear
    after it stays; none is added: onnxruntime 1.32's S8-to-U8 rewrite at ORT_ENABLE_EXTENDED
    fails on an added int8 pair before a Reshape). Only where the target runs QuantizeLinear
    and DequantizeLinear."""
    from .quantize import analyse

    if not (tgt.allows("QuantizeLinear") and tgt.allows("DequantizeLinear")):
        return model
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    if not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
               for n in g.node if n.op_type == "MatMul" for i in n.input):
        return model  # no MatMul reads a dequantized tensor: nothing to analyse
    def float32_mask(y: str) -> bool:  # the mask's Q/DQ pair is written with a float32 scale
        cast = next((producer.get(i) for i in producer[y].input if producer.get(i) is not None
                     and producer[i].op_type == "Cast"), None)
        return cast is not None and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT
                                        for a in cast.attribute)

    selections = {y: src for y, src in analyse(model).selections.items()
                  if producer.get(src) is not None and producer[src].op_type == "DequantizeLinear"
                  and float32_mask(y)}
    if not selections:
        return model
    taken = _all_names(g)  # every tensor and node name: the new ones must meet none

    def fresh(base: str) -> str:
        name = base
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    one, zero = fresh("_fxl_mask_scale"), fresh("_fxl_mask_zero_point")
    g.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), one),
                          numpy_helper.from_array(np.array(0, np.uint8), zero)])
    extra: dict[int, list[onnx.NodeProto]] = {}  # MatMul -> the Q/DQ nodes before it
    for y, src in sorted(selections.items()):
        mm = producer[y]
        k = 0 if mm.input[1] == src else 1
        mask = mm.input[k]
        q, dqm = fresh(mask + "_fxl_q"), fresh(mask + "_fxl_dq")
        extra.setdefault(id(mm), []).insert(0, helper.make_node(
            "QuantizeLinear", [mask, one, zero], [q], name=fresh(q)))
        extra[id(mm)].insert(1, helper.make_node("DequantizeLinear", [q, one, zero], [dqm],
                                                 name=fresh(dqm)))
        mm.input[k] = dqm
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        nodes += extra.get(id(n), []) + [n]
    del g.node[:]
    g.node.extend(nodes)
    return model


def _assemble(model: onnx.ModelProto, reps: list[_Replacement]) -> onnx.ModelProto:
    """The model with these replacements spliced in. The file never grows by what it no
    longer needs or already holds: initializers only the replaced nodes read are dropped,
    and the constants of the spliced subgraphs are stored once per content (nodes lowered
    alike share their masks and selection matrices)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_index = {r.index: r for r in reps}
    g = out.graph
    alias: dict[str, str] = {}  # a spliced constant -> the first one of the same content
    first: dict[str, str] = {}
    added = []
    for r in reps:
        for t in r.initializers:
            if t.name in r.node.output:  # a folded node's value keeps the node's output name
                added.append(t)
                continue
            a = numpy_helper.to_array(t)
            digest = hashlib.sha1(repr((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()
            if digest in first:
                alias[t.name] = first[digest]
            else:
                first[digest] = t.name
                added.append(t)
    new_nodes: list[onnx.NodeProto] = []
    for k, n in enumerate(g.node):
        rep = by_index.get(k)
        if rep is None:
            new_nodes.append(n)
            continue
        for m in rep.nodes:
            if any(i in alias for i in m.input):
                m = copy.deepcopy(m)
                m.input[:] = [alias.get(i, i) for i in m.input]
            new_nodes.append(m)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(added)
    replaced_inputs = {i for r in reps for i in r.node.input}
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    used |= _subgraph_inputs(g)
    declared = {i.name for i in g.input}  # an overridable initializer stays with its input
    keep = [t for t in g.initializer
            if t.name in used or t.name in declared or t.name not in replaced_inputs]
    del g.initializer[:]
    g.initializer.extend(keep)
    return out


def _subgraph_inputs(g: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for n in g.node:
        for a in n.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                names |= {i for m in sg.node for i in m.input}
                names |= _subgraph_inputs(sg)
    return names


def lower_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    target: Any = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    assume_finite: bool = False,
    verify: bool = True,
    verify_inputs: Sequence[Mapping[str, np.ndarray]] | None = None,
    draws: int = 2,
) -> tuple[onnx.ModelProto, OnnxReport]:
    """Lower the gather/scatter nodes of an ONNX model (see the module docstring). Returns
    the new model and its report; raises LoweringError for input it cannot read, and
    VerificationError when onnxruntime disagrees with the input file on what is left."""
    from .targets import get_target

    source = "<model>" if isinstance(model, onnx.ModelProto) else os.fspath(model)
    base: str | None = None
    if isinstance(model, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
    else:
        m, base = load(model)
    opset = _opset(m)
    if opset < _MIN_OPSET:
        raise OnnxCheckError(f"{source}: opset {opset}; fxlower lowers ONNX files of opset "
                            f"{_MIN_OPSET} and newer (onnx.version_converter can raise it)")
    tgt = get_target(target)
    report = OnnxReport(source, opset, external_data=base is not None)
    with progress.stage("lower") as st:
        report.ops_before = _op_counts(m.graph)
        original = onnx.ModelProto()
        original.CopyFrom(m)
        report.bound = _bind_inputs(m, input_shapes or {})
        shapes, consts = _analyse(m, base)
        if _dequantize_first(m, consts, tgt):
            shapes, consts = _analyse(m, base)
        inits = {t.name for t in m.graph.initializer}
        inputs_static = all(all(isinstance(d, int) and d > 0 for d in _dims(i.type.tensor_type))
                            for i in m.graph.input if i.name not in inits)
        lower_kwargs = {"assume_finite": assume_finite, "target": tgt}
        cache: dict[str, tuple[onnx.ModelProto, NodeResult]] = {}
        reps: list[_Replacement] = []
        node_facts = None  # what the target's conditions read, when one has any
        names = _all_names(m.graph)  # the spliced names must not meet any of these
        for k, node in enumerate(m.graph.node):
            if node.op_type in _SUBGRAPH_OPS:
                for inner in _inner_family(node):
                    report.nodes.append(NodeResult(
                        inner.name or inner.output[0], inner.op_type, "refused",
                        f"inside the body of {node.op_type} '{node.name}': nodes in If/Loop/Scan "
                        "bodies are not lowered"))
                continue
            if node.domain not in ("", "ai.onnx") or node.op_type not in FAMILY:
                continue
            if tgt.allows(node.op_type):
                if node_facts is None:
                    from .check import NodeFacts

                    node_facts = NodeFacts(m)
                if not tgt.broken_condition(node.op_type, node_facts.of(node, "graph")):
                    report.nodes.append(NodeResult(node.name or node.output[0], node.op_type,
                                                   "kept", f"target '{tgt.name}' runs {node.op_type}"))
                    continue
            got = _plan_node(k, node, consts, shapes, inputs_static, opset, lower_kwargs,
                             _fresh_prefix(f"fxl{k}_", names), cache)
            if isinstance(got, NodeResult):
                report.nodes.append(got)
            else:
                reps.append(got)
                report.nodes.append(got.result)
        def assemble(bound: onnx.ModelProto, chosen: list[_Replacement]) -> onnx.ModelProto:
            return _qdq_selections(_assemble(bound, chosen), tgt)

        out = assemble(m, reps)
    report.seconds["lower"] = st.seconds
    if verify and reps:
        path = None if isinstance(model, onnx.ModelProto) else os.fspath(model)
        with progress.stage("verify") as st:
            out, reps = _verify(original, path, m, base, out, reps, report, verify_inputs,
                                draws, assemble)
        report.seconds["verify"] = st.seconds
    if base is not None:  # what fits one protobuf comes back whole; larger stays in base
        size = sum(int(e.value) for t in _external_tensors(out) for e in t.external_data
                   if e.key == "length")
        if size + out.ByteSize() < _TWO_GB:
            onnx.load_external_data_for_model(out, base)
        else:
            report.data_dir = base
    report.ops_after = _op_counts(out.graph)
    report.remaining = [f"{r.op_type} '{r.name}': {r.detail}" for r in report.nodes
                        if r.status == "refused"]
    return out, report


def _all_names(g: onnx.GraphProto) -> set[str]:
    out = {i.name for i in g.input} | {o.name for o in g.output} | {
        t.name for t in g.initializer} | {v.name for v in g.value_info}
    for n in g.node:
        out.update(n.input)
        out.update(n.output)
        out.add(n.name)
    return out


def _fresh_prefix(prefix: str, names: set[str]) -> str:
    """`prefix`, lengthened until no name of the graph starts with it (a file lowered twice
    already holds fxl<k>_ names)."""
    while any(n.startswith(prefix) for n in names):
        prefix = prefix[:-1] + "x_"
    return prefix


def _inner_family(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    found = []
    for a in node.attribute:
        for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for n in sg.node:
                if n.op_type in FAMILY:
                    found.append(n)
                found += _inner_family(n)
    return found


def _op_counts(g: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in g.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return counts


# ---------------------------------------------------------------------------- verification


def _index_ranges(model: onnx.ModelProto,
                  shapes: dict[str, tuple[list[int | str | None], int]]) -> dict[str, int]:
    """For each integer graph input, the smallest dimension size it indexes through value-
    keeping ops (Cast, Reshape, Unsqueeze, ...) into a gather/scatter index: its draws stay
    in [0, n)."""
    keep = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand",
            "Transpose", "Slice", "Concat", "Tile"}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: dict[str, int] = {}
    for vi in model.graph.input:
        seen, stack, best = set(), [vi.name], None
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            for n in consumers.get(t, []):
                if n.op_type in keep:
                    stack.extend(n.output)
                elif n.op_type in FAMILY and len(n.input) > 1 and n.input[1] == t:
                    dims = shapes.get(n.input[0], ([None], 0))[0]
                    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
                    sizes: list[int] = []
                    if n.op_type in ("GatherND", "ScatterND"):
                        sizes = [d for d in dims if isinstance(d, int)]
                    else:
                        ax = int(a.get("axis", 0))
                        d_ax = dims[ax] if -len(dims) <= ax < len(dims) else None
                        sizes = [d_ax] if isinstance(d_ax, int) else []
                    if sizes:
                        best = min(sizes) if best is None else min(best, *sizes)
        if best is not None:
            out[vi.name] = best
    return out


def _feeds(model: onnx.ModelProto, shapes: dict[str, tuple[list[int | str | None], int]],
           draws: int) -> list[dict[str, np.ndarray]]:
    inits = {t.name for t in model.graph.initializer}
    ranges = _index_ranges(model, shapes)
    rng = np.random.default_rng(1234)
    feeds = []
    for _ in range(draws):
        feed = {}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            dims = [d if isinstance(d, int) else 2 for d in _dims(tt)]  # symbolic: 2
            dt = _np_dtype(tt.elem_type)
            if dt == np.bool_:
                feed[vi.name] = rng.integers(0, 2, dims).astype(bool)
            elif np.issubdtype(dt, np.floating):
                feed[vi.name] = rng.standard_normal(dims).astype(dt)
            else:
                hi = ranges.get(vi.name, 2)
                feed[vi.name] = rng.integers(0, max(1, hi), dims).astype(dt)
        feeds.append(feed)
    return feeds


def _session(model: onnx.ModelProto, path: str | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if path is not None:
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], base: str | None,
         path: str | None = None) -> list[list[np.ndarray]]:
    """onnxruntime on `model` (from `path` when it is the user's file as it is; a model
    whose tensors stay in files under `base` is written to a temporary folder beside links
    to them, since onnxruntime reads external data only from the model's own folder)."""
    if path is not None:
        sess = _session(model, path)
        return [sess.run(None, f) for f in feeds]
    if base is None or not uses_external_data(model):
        sess = _session(model)
        return [sess.run(None, f) for f in feeds]
    with tempfile.TemporaryDirectory() as d:
        _materialise(model, base, Path(d), "m.onnx", link=True)
        sess = _session(model, os.path.join(d, "m.onnx"))
        return [sess.run(None, f) for f in feeds]


def _verify(original: onnx.ModelProto, original_path: str | None, bound: onnx.ModelProto,
            base: str | None, out: onnx.ModelProto, reps: list[_Replacement],
            report: OnnxReport, verify_inputs: Sequence[Mapping[str, np.ndarray]] | None,
            draws: int, assemble: Callable[[onnx.ModelProto, list[_Replacement]], onnx.ModelProto]
            ) -> tuple[onnx.ModelProto, list[_Replacement]]:
    """onnxruntime on the input file and the output file, the same inputs; a mismatch is
    bisected to the replacement that causes it, which is left out."""
    from .verify import compare

    shapes = _infer(bound, {}, base)
    feeds = ([dict(v) for v in verify_inputs] if verify_inputs is not None
             else _feeds(bound, shapes, draws))
    try:
        refs = _run(original, feeds, base, original_path)
    except Exception as e:  # noqa: BLE001
        raise OnnxCheckError(f"{report.source}: onnxruntime cannot run the input file: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else e}") from e

    def mismatch(model: onnx.ModelProto) -> str:
        try:
            got = _run(model, feeds, base)
        except Exception as e:  # noqa: BLE001
            return f"onnxruntime cannot run it: {(str(e).strip().splitlines() or [''])[0]}"
        for ref, g in zip(refs, got, strict=True):
            mm, _, _, _ = compare(tuple(torch.from_numpy(np.asarray(r)) for r in ref),
                                  tuple(torch.from_numpy(np.asarray(x)) for x in g), None)
            if mm:
                return f"{mm[0].output}: {mm[0].message}"
        return ""

    worst = mismatch(out)
    left_out: list[str] = []
    while worst and reps:
        lo, hi = 0, len(reps)  # prefix lo passes, prefix hi fails
        if mismatch(assemble(bound, [])):
            raise VerificationError(f"{report.source}: the file with no node replaced already "
                                    f"differs from the input ({worst})")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if mismatch(assemble(bound, reps[:mid])):
                hi = mid
            else:
                lo = mid
        bad = reps.pop(hi - 1)
        bad.result.status = "refused"
        bad.result.detail = f"verification failed in onnxruntime ({worst}); left out"
        left_out.append(bad.result.name)
        out = assemble(bound, reps)
        worst = mismatch(out)
    report.verification = {"runs": len(feeds), "inputs": "verify_inputs" if verify_inputs
                           is not None else "fresh draws", "matched": not worst}
    if left_out:
        report.verification["left_out"] = left_out
    return out, reps


# ---------------------------------------------------------------------------- writing


def save(model: onnx.ModelProto, path: str | os.PathLike[str], *, external: bool,
         data_dir: str | None = None) -> None:
    """Write `model` at `path` all at once (into a temporary folder beside it, then moved):
    never a partial file. With `external` (or a model over 2 GB) the tensors go to
    `<name>.data` beside it; tensors the model still keeps in files under `data_dir` (the
    input's folder, for models over 2 GB: `OnnxReport.data_dir`) are streamed there too."""
    dest = Path(path)
    if dest.is_dir():
        raise OnnxCheckError(f"{dest}: is a directory; -o names the output file")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fxlower-", dir=dest.parent))
    except OSError as e:
        raise OnnxCheckError(f"{dest}: cannot write there: {e.strerror or e}") from e
    data_name = dest.name + ".data"
    moved: list[Path] = []
    try:
        if data_dir is not None and uses_external_data(model):
            _materialise(model, data_dir, tmp, dest.name, link=False)
        elif external or model.ByteSize() >= _TWO_GB:
            onnx.save_model(model, str(tmp / dest.name), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name,
                            size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp / dest.name))
        if (tmp / data_name).exists():
            os.replace(tmp / data_name, dest.parent / data_name)
            moved.append(dest.parent / data_name)
        os.replace(tmp / dest.name, dest)
    except OSError as e:
        for f in moved:  # the model did not land: nor does its data
            f.unlink(missing_ok=True)
        raise OnnxCheckError(f"{dest}: cannot write it: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _materialise(model: onnx.ModelProto, base: str, folder: Path, name: str, *, link: bool
                 ) -> None:
    """`folder/name` with the external data of `model` (files under `base`) beside it:
    `link`: each file linked (or copied) under its own location, for a temporary model;
    otherwise streamed into one `name.data`, offsets moved, for the output."""
    from onnx.external_data_helper import _get_all_tensors
    from onnx.external_data_helper import uses_external_data as uses

    m = onnx.ModelProto()
    m.CopyFrom(model)
    tensors = [t for t in _get_all_tensors(m) if uses(t)]
    locations = list(dict.fromkeys(
        next(e.value for e in t.external_data if e.key == "location") for t in tensors))
    if link:
        for loc in locations:
            dst = folder / loc
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(os.path.join(base, loc), dst)
            except OSError:  # another file system
                shutil.copyfile(os.path.join(base, loc), dst)
    else:
        start: dict[str, int] = {}
        with open(folder / f"{name}.data", "wb") as out:
            for loc in locations:
                start[loc] = out.tell()
                with open(os.path.join(base, loc), "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        for t in tensors:
            entries = {e.key: e.value for e in t.external_data}
            entries["offset"] = str(int(entries.get("offset", 0)) + start[entries["location"]])
            entries["location"] = f"{name}.data"
            del t.external_data[:]
            for k, v in entries.items():
                e = t.external_data.add()
                e.key, e.value = k, v
    with open(folder / name, "wb") as f:
        f.write(m.SerializeToString())


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors
    from onnx.external_data_helper import uses_external_data as uses

    return [t for t in _get_all_tensors(model) if uses(t)]


def uses_external_data(model: onnx.ModelProto) -> bool:
    from onnx.external_data_helper import _get_all_tensors
    from onnx.external_data_helper import uses_external_data as uses

    return any(uses(t) for t in _get_all_tensors(model))


def parse_input_shapes(specs: Sequence[str]) -> dict[str, list[int]]:
    """`NAME=D0,D1,...` (the CLI's --input-shape) into {name: dims}."""
    out: dict[str, list[int]] = {}
    for s in specs:
        name, eq, dims = s.rpartition("=")
        try:
            if not eq or not name:
                raise ValueError
            out[name] = [int(d) for d in dims.split(",") if d.strip()]
            if any(d <= 0 for d in out[name]):
                raise ValueError
        except ValueError as e:
            raise FxlowerError(f"--input-shape {s!r}: expected NAME=D0,D1,... with positive "
                                "integer dims") from e
    return out


__all__ = ["lower_onnx", "load", "save", "OnnxReport", "NodeResult", "parse_input_shapes",
           "uses_external_data", "FAMILY"]
