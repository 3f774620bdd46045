"""Normalise: one spelling per op, so each pass is written once.

The gather family reaches fxlower in many spellings (torch functions, Tensor methods,
`nn` modules, `operator.getitem` from symbolic tracing, ATen overloads from torch.export).
This stage rewrites each into one of three canonical ATen calls, with identical semantics:

| canonical                     | from                                                       |
| ----------------------------- | ---------------------------------------------------------- |
| `aten.select.int(x, d, i)`    | `x[..., i, ...]` (int), `Tensor.select`, `torch.select`,   |
|                               | `unbind(x, d)[i]`                                          |
| `aten.index.Tensor(x, idx)`   | `x[idx]`, `x[:, idx]`, several index tensors, `index_select`, |
|                               | `nn.Embedding`/`F.embedding`/`aten.embedding`, `torch.take` |
| `aten.gather.default(x, d, i)`| `torch.gather`, `Tensor.gather`, `take_along_dim`           |

`Tensor.unfold(d, size, step)` (sliding windows) is an index along d with the constant
window positions `w * step + j`, then a move of the window axis to the end.

`getitem` keys are decomposed exactly as PyTorch's own indexing does it (ints select,
slices slice, None unsqueezes, Ellipsis skips, tensors collect into one `aten.index`), the
same graph torch.export produces. The user-facing name of each rewritten node is kept in
`node.meta["fxl_origin"]` for the report.
"""

from __future__ import annotations

import operator
import sys
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from . import graph as g
from .report import Report, Skipped

aten = torch.ops.aten
SELECT = aten.select.int
INDEX = aten.index.Tensor
GATHER = aten.gather.default
# meta key on an `aten.index` that stands for an op raising on an index outside [0, n)
# (nn.Embedding, F.embedding, index_select): its indices need no wrapping of negatives
IN_RANGE = "fxl_index_in_range"

_SPELLINGS: dict[str, set[Any]] = {
    "gather": {torch.gather, aten.gather.default, "gather"},
    "take_along_dim": {torch.take_along_dim, aten.take_along_dim.default, "take_along_dim"},
    "index_select": {torch.index_select, aten.index_select.default, "index_select"},
    "embedding": {F.embedding, aten.embedding.default},
    "take": {torch.take, aten.take.default, "take"},
    "select": {torch.select, aten.select.int, "select"},
    "unbind": {torch.unbind, aten.unbind.int, "unbind"},
    "getitem": {operator.getitem},
    "unfold": {aten.unfold.default, "unfold"},
}


def kind_of(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """The gather-family op a node performs, whatever its spelling, or None."""
    if node.op == "call_module":
        mod = g.get_attr(gm, str(node.target))
        return "embedding_module" if isinstance(mod, nn.Embedding) else None
    if node.op not in ("call_function", "call_method"):
        return None
    t = node.target
    for kind, spellings in _SPELLINGS.items():
        if node.op == "call_method":
            if t in spellings and isinstance(t, str):
                return kind
        elif not isinstance(t, str) and t in spellings:
            return kind
    return None


def _rank(node: Any) -> int | None:
    s = g.spec(node)
    return s.rank if s is not None else None


_SIZE_QUERIES = {aten.sym_size.int, aten.sym_numel.default, aten.sym_storage_offset.default,
                 "size", "dim", "numel"}
_INT_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod,
                   operator.neg, operator.getitem, getattr}


def _static(a: Any) -> bool:
    """True when a value is known when lowering: constants, and ints computed only from
    (static, specialised) shapes. `aten.item` of an input-derived tensor is not."""
    if not isinstance(a, fx.Node):
        return True
    if g.is_const(a):
        return True
    if a.target in _SIZE_QUERIES:
        return True
    if a.op == "call_function" and a.target in _INT_ARITHMETIC:
        return all(_static(x) or g.spec(x) is not None and x is a.args[0]
                   and a.target in (operator.getitem, getattr) and _is_shape(a)
                   for x in a.all_input_nodes)
    return False


def _is_shape(a: fx.Node) -> bool:
    """x.shape[i] / getattr(x, 'shape') in symbolically traced graphs."""
    if a.target is getattr:
        return a.args[1] == "shape"
    src = a.args[0]
    return isinstance(src, fx.Node) and src.target is getattr and src.args[1] == "shape"


def int_value(a: Any) -> int | None:
    """A Python int, or a node whose value is an int known when lowering (e.g. x.size(0) - 1).
    Data-dependent ints (`aten.item` of an input-derived tensor) give None."""
    if isinstance(a, bool):
        return None
    if isinstance(a, int):
        return a
    if isinstance(a, fx.Node) and isinstance(a.meta.get(g.VAL), int) and _static(a):
        return int(a.meta[g.VAL])
    return None


def _is_tensor_node(a: Any) -> bool:
    return isinstance(a, fx.Node) and g.spec(a) is not None


class _Emitter:
    def __init__(self, gm: fx.GraphModule, anchor: fx.Node, origin: str) -> None:
        self.gm, self.anchor, self.origin = gm, anchor, origin

    def call(self, target: Any, *args: Any) -> fx.Node:
        with self.gm.graph.inserting_before(self.anchor):
            n = self.gm.graph.call_function(target, args)
        n.meta["fxl_origin"] = self.origin
        return n

    def get_attr(self, target: str) -> fx.Node:
        with self.gm.graph.inserting_before(self.anchor):
            return self.gm.graph.get_attr(target)


def _item_source(a: Any) -> fx.Node | None:
    """The tensor t when `a` is `t.item()` / `aten.item(t)` of a non-constant tensor."""
    if (isinstance(a, fx.Node) and a.target in (aten.item.default, "item")
            and isinstance(a.args[0], fx.Node) and not g.is_const(a.args[0])):
        return a.args[0]
    return None


def _finish(old: fx.Node, new: fx.Node) -> None:
    if g.VAL in old.meta:
        new.meta[g.VAL] = old.meta[g.VAL]
    old.replace_all_uses_with(new)
    old.graph.erase_node(old)


def _padding_row_without_grad(e: _Emitter, w: fx.Node, weight: Any, padding_idx: int | None,
                              training: bool) -> fx.Node:
    """An embedding's padding row gets no gradient. A mask product would give it one, so in
    training mode the table is used as w - (w - w.detach()) * onehot(padding_idx): the same
    values (w - w is exactly 0 for a finite table), and a zero gradient on that row. Models
    lowered in eval mode (deployment) skip it: it would cost an elementwise pass."""
    if padding_idx is None or not training or not getattr(weight, "requires_grad", False):
        return w
    rows = int(weight.shape[0])
    pad = padding_idx % rows
    name = f"_fxl_padrow_{w.name}"
    mask = torch.zeros(rows, 1, dtype=weight.dtype)
    mask[pad] = 1
    e.gm.register_buffer(name, mask, persistent=False)
    frozen = e.call(aten.detach.default, w)
    delta = e.call(aten.mul.Tensor, e.call(aten.sub.Tensor, w, frozen), e.get_attr(name))
    return e.call(aten.sub.Tensor, w, delta)


def _in_range(n: fx.Node) -> fx.Node:
    n.meta[IN_RANGE] = True
    return n


def _index_along(e: _Emitter, x: Any, dim: int, idx: Any) -> fx.Node:
    return e.call(INDEX, x, [None] * dim + [idx])


def _normalise_getitem(node: fx.Node, e: _Emitter) -> str | None:
    """Decompose x[key] the way torch's indexing does. Returns a skip reason or None."""
    x, key = node.args
    items = list(key) if isinstance(key, tuple) else [key]
    rank = _rank(x)
    has_work = any(int_value(k) is not None or _is_tensor_node(k) or isinstance(k, list)
                   for k in items)
    if not has_work:
        return None
    if rank is None and not any(k is None or isinstance(k, slice) for k in items):
        return None  # without shapes, x[0] may index a tuple: not provably a tensor
    if rank is None and any(k is Ellipsis for k in items):
        return "shapes unknown: pass example_inputs so '...' can be resolved"
    for k in items:
        if isinstance(k, fx.Node) and int_value(k) is None and not _is_tensor_node(k):
            return f"index item '{k.name}' is neither an int nor a tensor"
        s = g.spec(k) if isinstance(k, fx.Node) else None
        if s is not None and s.dtype in (torch.bool, torch.uint8):
            return "boolean mask index: the output shape depends on the data"
        if isinstance(k, list) and any(isinstance(v, bool) or not isinstance(v, int) for v in k):
            return "index list of non-ints"
    specified = sum(1 for k in items if k is not None and k is not Ellipsis)
    y: Any = x
    dim = 0
    indices: list[Any] = []
    for k in items:
        iv = int_value(k) if not isinstance(k, list) else None
        if k is Ellipsis:
            dim += (rank or 0) - specified
        elif k is None:
            y = e.call(aten.unsqueeze.default, y, dim)
            dim += 1
        elif isinstance(k, slice):
            if not (k.start is None and k.stop is None and k.step is None):
                y = e.call(aten.slice.Tensor, y, dim,
                           0 if k.start is None else k.start,
                           sys.maxsize if k.stop is None else k.stop,
                           1 if k.step is None else k.step)
            dim += 1
        elif iv is not None:
            y = e.call(SELECT, y, dim, iv)
        else:  # a tensor (node) or a literal list of ints
            if isinstance(k, list):
                t = torch.tensor(k, dtype=torch.int64)
                name = f"_fxl_index_{len([n for n in dir(e.gm) if n.startswith('_fxl_index_')])}"
                e.gm.register_buffer(name, t, persistent=False)
                k = e.get_attr(name)
            indices += [None] * (dim - len(indices)) + [k]
            dim += 1
    if indices:
        y = e.call(INDEX, y, indices)
    _finish(node, y)
    return None


def normalise(gm: fx.GraphModule, report: Report, target: Any = None) -> bool:
    """Rewrite every recognised spelling into its canonical call. Returns True if changed.
    A node whose ONNX ops the target runs natively keeps its own spelling (an embedding
    exports to Gather, its canonical `aten.index` to GatherND)."""
    from .census import native

    changed = False
    for node in list(gm.graph.nodes):
        kind = kind_of(node, gm)
        if kind is None:
            continue
        origin = _origin(node, kind)
        node.meta["fxl_origin"] = origin
        kept = native(node, gm, target)
        if kept:
            report.skipped.append(Skipped("normalise", node.name, origin, kept))
            continue
        e = _Emitter(gm, node, origin)
        reason = _normalise_one(node, kind, gm, e)
        if reason is not None:
            report.skipped.append(Skipped("normalise", node.name, origin, reason))
        else:
            changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return changed


def _origin(node: fx.Node, kind: str) -> str:
    if kind == "embedding_module":
        return f"nn.Embedding '{node.target}'"
    if kind == "getitem":
        return f"indexing '{node.name}'"
    prefix = "Tensor." if node.op == "call_method" else ""
    if isinstance(node.target, torch._ops.OpOverload):
        prefix = "aten."
    return f"{prefix}{kind} '{node.name}'"


def _normalise_one(node: fx.Node, kind: str, gm: fx.GraphModule, e: _Emitter) -> str | None:
    if kind == "getitem":
        if not isinstance(node.args[0], fx.Node):
            return None
        return _normalise_getitem(node, e)

    if kind == "embedding_module":
        mod = g.get_attr(gm, str(node.target))
        if mod.max_norm is not None:
            return "max_norm renormalises the embedding table in place during the forward pass"
        if mod.scale_grad_by_freq:
            return "scale_grad_by_freq changes gradients, which a mask product would not reproduce"
        table = e.get_attr(f"{node.target}.weight")
        table = _padding_row_without_grad(e, table, mod.weight, mod.padding_idx, mod.training)
        _finish(node, _in_range(e.call(INDEX, table, [node.args[0]])))
        return None

    if kind == "embedding":
        if node.target is F.embedding:
            idx, w = g.arg(node, 0, "input"), g.arg(node, 1, "weight")
            if g.arg(node, 3, "max_norm") is not None:
                return "max_norm renormalises the embedding table in place during the forward pass"
            if g.arg(node, 5, "scale_grad_by_freq", False):
                return "scale_grad_by_freq changes gradients, which a mask product would not reproduce"
            pad = g.arg(node, 2, "padding_idx")
        else:
            w, idx = node.args[0], node.args[1]
            if g.arg(node, 3, "scale_grad_by_freq", False):
                return "scale_grad_by_freq changes gradients, which a mask product would not reproduce"
            pad = g.arg(node, 2, "padding_idx", -1)
            pad = None if pad == -1 else pad
        if isinstance(w, fx.Node) and w.op == "get_attr" and isinstance(pad, int):
            w = _padding_row_without_grad(e, w, g.get_attr(gm, str(w.target)), pad, gm.training)
        _finish(node, _in_range(e.call(INDEX, w, [idx])))
        return None

    x = node.args[0] if node.args else node.kwargs.get("input")
    if kind == "select":
        dim, i = g.arg(node, 1, "dim"), g.arg(node, 2, "index")
        src = _item_source(i)
        if src is not None:  # x.select(d, t.item()): a data-dependent index is a 0-d tensor index
            rank = _rank(x)
            if dim < 0:
                if rank is None:
                    return "shapes unknown: pass example_inputs to resolve a negative dim"
                dim += rank
            _finish(node, _index_along(e, x, dim, src))
            return None
        if node.target is SELECT:
            return None
        _finish(node, e.call(SELECT, x, dim, i))
        return None

    if kind == "unbind":
        dim = g.arg(node, 1, "dim", 0)
        users = list(node.users)
        if not all(u.op == "call_function" and u.target is operator.getitem
                   and isinstance(u.args[1], int) for u in users):
            return "the unbound tuple is used as a whole, not item by item"
        for u in users:
            u.meta["fxl_origin"] = f"unbind '{node.name}'[{u.args[1]}]"
            eu = _Emitter(gm, u, u.meta["fxl_origin"])
            _finish(u, eu.call(SELECT, x, dim, u.args[1]))
        gm.graph.erase_node(node)
        return None

    if kind == "take":
        idx = g.arg(node, 1, "index")
        flat = e.call(aten.reshape.default, x, [-1])
        _finish(node, e.call(INDEX, flat, [idx]))
        return None

    if kind == "index_select":
        dim, idx = g.arg(node, 1, "dim"), g.arg(node, 2, "index")
        rank = _rank(x)
        if dim < 0:
            if rank is None:
                return "shapes unknown: pass example_inputs to resolve a negative dim"
            dim += rank
        flat = e.call(aten.reshape.default, idx, [-1])
        _finish(node, _in_range(_index_along(e, x, dim, flat)))
        return None

    if kind == "gather":
        dim, idx = g.arg(node, 1, "dim"), g.arg(node, 2, "index")
        if node.target is GATHER and not node.kwargs:
            return None
        _finish(node, e.call(GATHER, x, dim, idx))
        return None

    if kind == "unfold":
        dim, size, step = (g.arg(node, 1, "dimension"), g.arg(node, 2, "size"),
                           g.arg(node, 3, "step"))
        sx = g.spec(x)
        if sx is None:
            return "shapes unknown: pass example_inputs to resolve the windows"
        dim = dim % max(sx.rank, 1)
        windows = (sx.shape[dim] - size) // step + 1
        pos = (torch.arange(windows) * step).unsqueeze(1) + torch.arange(size)
        name = f"_fxl_windows_{node.name}"
        e.gm.register_buffer(name, pos, persistent=False)
        y = _index_along(e, x, dim, e.get_attr(name))  # [..., windows, size, ...]
        _finish(node, e.call(aten.movedim.int, y, dim + 1, -1))
        return None

    if kind == "take_along_dim":
        idx, dim = g.arg(node, 1, "indices"), g.arg(node, 2, "dim")
        sx, si = g.spec(x), g.spec(idx)
        if sx is None or si is None:
            return "shapes unknown: pass example_inputs to resolve take_along_dim's broadcast"
        if dim is None:
            fx_ = e.call(aten.reshape.default, x, [-1])
            fi = e.call(aten.reshape.default, idx, [-1])
            _finish(node, e.call(GATHER, fx_, 0, fi))
            return None
        if sx.rank != si.rank:
            return "take_along_dim with inputs of different ranks"
        dim = dim % sx.rank
        common = list(torch.broadcast_shapes(  # type: ignore[no-untyped-call]
            tuple(1 if d == dim else s for d, s in enumerate(sx.shape)),
            tuple(1 if d == dim else s for d, s in enumerate(si.shape)),
        ))
        xs = [sx.shape[dim] if d == dim else c for d, c in enumerate(common)]
        is_ = [si.shape[dim] if d == dim else c for d, c in enumerate(common)]
        xb = x if list(sx.shape) == xs else e.call(aten.expand.default, x, xs)
        ib = idx if list(si.shape) == is_ else e.call(aten.expand.default, idx, is_)
        _finish(node, e.call(GATHER, xb, dim, ib))
        return None
    return None
