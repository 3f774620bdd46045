"""Which graph nodes the ONNX exporter turns into Gather- or Scatter-family nodes.

Found by exporting (torch 2.13, `torch.onnx.export(..., dynamo=True)`, static shapes; the
probe's table is docs/exporter-ops.md), not by guessing. The graph-level census is a fast
early warning; the proof is the exported file (`fxlower.check`).
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, cast

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import arg, get_attr, op_name, spec

if TYPE_CHECKING:
    from .targets import Facts, Target

aten = torch.ops.aten

# ATen op (overload packet) -> ONNX op types it exports to (gather and scatter families,
# and the data-dependent ops that come with them).
_G, _GE, _GND = "Gather", "GatherElements", "GatherND"
_ATEN: dict[object, frozenset[str]] = {
    aten.gather: frozenset({_GE}),
    aten.take_along_dim: frozenset({_GE}),
    aten.index_select: frozenset({_G}),
    aten.embedding: frozenset({_G}),
    aten.embedding_bag: frozenset({_G}),
    aten.embedding_renorm: frozenset({_G, "ScatterND"}),  # max_norm: renormalises rows in place
    aten.embedding_renorm_: frozenset({_G, "ScatterND"}),
    aten._embedding_bag: frozenset({_G}),
    aten.select: frozenset({_G}),
    aten.index: frozenset({_GND}),
    aten.take: frozenset({_GND}),
    aten.unfold: frozenset({_G}),
    aten.im2col: frozenset({_G}),
    aten.masked_scatter: frozenset({_G, "ScatterND", "NonZero"}),
    aten.bucketize: frozenset({_GND}),
    aten.masked_select: frozenset({_GND, "NonZero"}),
    aten.nonzero: frozenset({"NonZero"}),
    aten.scatter: frozenset({"ScatterElements"}),
    aten.scatter_add: frozenset({"ScatterElements"}),
    aten.scatter_reduce: frozenset({"ScatterElements"}),
    aten.index_put: frozenset({"ScatterND"}),
    aten.index_put_: frozenset({"ScatterND"}),
    aten.index_add: frozenset({"ScatterND"}),
    aten.index_copy: frozenset({"ScatterND"}),
    aten.slice_scatter: frozenset({"ScatterND"}),
    aten.select_scatter: frozenset({"ScatterElements"}),
    aten.index_fill: frozenset({"ScatterND"}),
    aten.index_fill_: frozenset({"ScatterND"}),
    aten.scatter_: frozenset({"ScatterElements"}),
    aten.scatter_add_: frozenset({"ScatterElements"}),
    aten.scatter_reduce_: frozenset({"ScatterElements"}),
    aten.index_add_: frozenset({"ScatterND"}),
    aten.index_copy_: frozenset({"ScatterND"}),
    aten.masked_scatter_: frozenset({_G, "ScatterND", "NonZero"}),
}
_TORCH: dict[object, frozenset[str]] = {
    torch.gather: frozenset({_GE}),
    torch.take_along_dim: frozenset({_GE}),
    torch.index_select: frozenset({_G}),
    F.embedding: frozenset({_G}),
    F.embedding_bag: frozenset({_G}),
    torch.select: frozenset({_G}),
    torch.take: frozenset({_GND}),
    F.unfold: frozenset({_G}),
    torch.bucketize: frozenset({_GND}),
    torch.masked_select: frozenset({_GND, "NonZero"}),
    torch.nonzero: frozenset({"NonZero"}),
    torch.scatter: frozenset({"ScatterElements"}),
    torch.scatter_add: frozenset({"ScatterElements"}),
    torch.index_add: frozenset({"ScatterND"}),
    torch.index_copy: frozenset({"ScatterND"}),
    torch.slice_scatter: frozenset({"ScatterND"}),
    torch.select_scatter: frozenset({"ScatterElements"}),
    torch.scatter_reduce: frozenset({"ScatterElements"}),
    torch.index_put: frozenset({"ScatterND"}),
    torch.index_put_: frozenset({"ScatterND"}),
    torch.index_fill: frozenset({"ScatterND"}),
    torch.masked_scatter: frozenset({_G, "ScatterND", "NonZero"}),
}
_METHODS: dict[str, frozenset[str]] = {
    "gather": frozenset({_GE}), "take_along_dim": frozenset({_GE}),
    "index_select": frozenset({_G}), "select": frozenset({_G}), "take": frozenset({_GND}),
    "unfold": frozenset({_G}), "masked_scatter": frozenset({_G, "ScatterND", "NonZero"}),
    "masked_scatter_": frozenset({_G, "ScatterND", "NonZero"}),
    "masked_select": frozenset({_GND, "NonZero"}), "nonzero": frozenset({"NonZero"}),
    "scatter": frozenset({"ScatterElements"}), "scatter_": frozenset({"ScatterElements"}),
    "scatter_add": frozenset({"ScatterElements"}), "scatter_add_": frozenset({"ScatterElements"}),
    "index_put": frozenset({"ScatterND"}), "index_put_": frozenset({"ScatterND"}),
    "index_add": frozenset({"ScatterND"}), "index_add_": frozenset({"ScatterND"}),
    "index_copy": frozenset({"ScatterND"}), "index_copy_": frozenset({"ScatterND"}),
    "index_fill": frozenset({"ScatterND"}), "index_fill_": frozenset({"ScatterND"}),
    "scatter_reduce": frozenset({"ScatterElements"}),
    "scatter_reduce_": frozenset({"ScatterElements"}),
    "slice_scatter": frozenset({"ScatterND"}), "select_scatter": frozenset({"ScatterElements"}),
}
_MODULES: dict[type, frozenset[str]] = {
    nn.Embedding: frozenset({_G}),
    nn.EmbeddingBag: frozenset({_G}),
    nn.Unfold: frozenset({_G}),
    nn.MultiheadAttention: frozenset({_G}),
}
_REPEAT_INTERLEAVE_TENSOR = frozenset({_G, _GND, "Range", "CumSum"})

# Ops the exporter decomposes into gathers or scatters, by name: the same rule holds for the
# ATen op of a torch.export graph, the torch function and the Tensor method of a symbolic
# trace (`aten.quantile`, `torch.quantile`, `x.quantile` are all "quantile"). Probed op by
# op (docs/exporter-ops.md, "Grounded census", table A); the conditional ones are in _rules.
_BY_NAME: dict[str, frozenset[str]] = {
    "as_strided": frozenset({_G}), "resize_": frozenset({_G}),
    "_local_scalar_dense": frozenset({_G}), "item": frozenset({_G}),
    "_unsafe_index": frozenset({_GND}), "_unsafe_masked_index": frozenset({_GND}),
    "_unsafe_index_put": frozenset({"ScatterND"}),
    "_unsafe_masked_index_put_accumulate": frozenset({"ScatterND"}),
    "_upsample_nearest_exact1d": frozenset({_GND}), "_upsample_nearest_exact2d": frozenset({_GND}),
    "_upsample_nearest_exact3d": frozenset({_GND}), "upsample_linear1d": frozenset({_GND}),
    "multi_margin_loss": frozenset({_GE}), "multilabel_margin_loss": frozenset({_GE}),
    "quantile": frozenset({_GE}), "nanquantile": frozenset({_GE}),
    "max_unpool1d": frozenset({"ScatterND"}), "max_unpool2d": frozenset({"ScatterND"}),
    "max_unpool3d": frozenset({"ScatterND"}), "bincount": frozenset({"ScatterElements"}),
    "_embedding_bag_forward_only": frozenset({_G}),
}
_POOLS = ("adaptive_avg_pool1d", "adaptive_avg_pool2d")


def pooled_sizes(shape: tuple[int, ...] | None, out: object, dims: int
                 ) -> tuple[int, ...] | None:
    """The output size of each of the last `dims` dims of `shape` that adaptive pooling to
    `output_size=out` gives (an int for all, or one per dim, None keeping the input's), or
    None when a size is not known when lowering."""
    if shape is None or len(shape) < dims:
        return None
    outs = list(out) if isinstance(out, (list, tuple)) else [out] * dims
    if len(outs) != dims or not all(o is None or isinstance(o, int) and o > 0 for o in outs):
        return None
    return tuple(i if o is None else cast(int, o) for i, o in zip(shape[-dims:], outs,
                                                                  strict=True))


def _adaptive_avg_pool(shape: tuple[int, ...] | None, out: object, dims: int) -> frozenset[str]:
    """Adaptive average pooling of the last `dims` dims of `shape` to `out`: the exporter's
    decomposition pools each output window with `index` (GatherND) when a pooled size does
    not divide, and adds `select` (Gather) when the windows vary in length (`in % out != 0`
    and `out % (in % out) != 0`, torch._decomp's own test). Unknown sizes: assume both."""
    sizes = pooled_sizes(shape, out, dims)
    if shape is None or sizes is None:
        return frozenset({_G, _GND})
    ops: set[str] = set()
    for i, o in zip(shape[-dims:], sizes, strict=True):
        if i % o:
            ops.add(_GND)
            if o % (i % o):
                ops.add(_G)
    return frozenset(ops)


def _interpolate(shape: tuple[int, ...] | None, size: object, scale: object,
                 mode: object) -> frozenset[str]:
    """F.interpolate / nn.Upsample: "nearest-exact" and 1-D "linear" index their input
    (GatherND) whatever the sizes; "area" is adaptive average pooling to the output size."""
    spatial = None if shape is None else len(shape) - 2
    if mode == "nearest-exact" or (mode == "linear" and spatial in (1, None)):
        return frozenset({_GND})
    if mode != "area":
        return frozenset()
    if shape is None or spatial is None or spatial not in (1, 2):
        return frozenset({_G, _GND})
    if size is None:
        scales = list(scale) if isinstance(scale, (list, tuple)) else [scale] * spatial
        if len(scales) != spatial or not all(isinstance(f, (int, float)) for f in scales):
            return frozenset({_G, _GND})
        size = [int(i * cast(float, f)) for i, f in zip(shape[2:], scales, strict=True)]
    return _adaptive_avg_pool(shape, size, spatial)


def _rules(node: fx.Node, name: str) -> frozenset[str] | None:
    """The conditional rows of the grounded census, for a call named `name`; None when the
    name has no such rule."""
    x = spec(arg(node, 0, "input", arg(node, 0, "self")))
    shape = x.shape if x is not None else None
    if name in _POOLS:
        return _adaptive_avg_pool(shape, arg(node, 1, "output_size"), int(name[-2]))
    if name == "interpolate":
        return _interpolate(shape, arg(node, 1, "size"), arg(node, 2, "scale_factor"),
                            arg(node, 3, "mode", "nearest"))
    if name in ("nll_loss", "nll_loss_nd"):  # (N, C, d1, ...) inputs gather their targets
        return frozenset({_GE}) if shape is None or len(shape) >= 3 else frozenset()
    if name in ("trapezoid", "trapz"):  # spacing dx (no x): the ends are selected
        x_arg = arg(node, 1, "x")
        return frozenset({_G}) if not isinstance(x_arg, fx.Node) else frozenset()
    if name == "tensor_split":  # split points in a tensor are read with item()
        return frozenset({_G}) if isinstance(arg(node, 1, "indices_or_sections"),
                                             fx.Node) else frozenset()
    return None


# Leaf modules of symbolic tracing whose forward exports to Gather-family nodes and which no
# pass handles as a module: capture prefers torch.export, which decomposes them.
OPAQUE_MODULES: tuple[type, ...] = (nn.MultiheadAttention, nn.EmbeddingBag, nn.Unfold)


def _packet(t: object) -> object:
    return getattr(t, "overloadpacket", t)


def exports_to(node: fx.Node, gm: fx.GraphModule) -> frozenset[str]:
    """The gather/scatter-family ONNX op types this graph node exports to (empty if none)."""
    none: frozenset[str] = frozenset()
    if node.op == "call_module":
        mod = get_attr(gm, str(node.target))
        for cls, ops in _MODULES.items():
            if isinstance(mod, cls):
                return ops
        return _module_rules(node, mod)
    if node.op not in ("call_method", "call_function"):
        return none
    name = op_name(node)
    by_name = _BY_NAME.get(name)
    if by_name is not None:
        return by_name
    ruled = _rules(node, name)
    if ruled is not None:
        return ruled
    if node.op == "call_method":
        return _METHODS.get(str(node.target), none)
    t = node.target
    if t is operator.getitem and isinstance(node.args[0], fx.Node):
        key = node.args[1]
        items = key if isinstance(key, tuple) else (key,)
        if spec(node.args[0]) is not None and any(
            (isinstance(k, int) and not isinstance(k, bool)) or isinstance(k, (fx.Node, list))
            for k in items
        ):
            return frozenset({_G, _GND})
        return none
    if t is operator.setitem:
        return frozenset({"ScatterND"})
    if isinstance(t, torch._ops.OpOverload):
        if t in (aten.repeat_interleave.self_Tensor, aten.repeat_interleave.Tensor):
            return _REPEAT_INTERLEAVE_TENSOR
        return _ATEN.get(_packet(t), none)
    return _TORCH.get(t, none)


def _module_rules(node: fx.Node, mod: object) -> frozenset[str]:
    """The modules whose forward is one of the conditional ops of `_rules`."""
    x = spec(node.args[0]) if node.args else None
    shape = x.shape if x is not None else None
    if isinstance(mod, nn.AdaptiveAvgPool1d):
        return _adaptive_avg_pool(shape, mod.output_size, 1)
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return _adaptive_avg_pool(shape, mod.output_size, 2)
    if isinstance(mod, nn.Upsample):
        return _interpolate(shape, mod.size, mod.scale_factor, mod.mode)
    if isinstance(mod, (nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)):
        return _BY_NAME["max_unpool2d"]
    if isinstance(mod, (nn.MultiMarginLoss, nn.MultiLabelMarginLoss)):
        return _BY_NAME["multi_margin_loss"]
    return frozenset()


def census(gm: fx.GraphModule, forbidden: frozenset[str]) -> dict[str, int]:
    """Count the graph's nodes that would export to a forbidden ONNX op, by op name."""
    out: dict[str, int] = {}
    for n in gm.graph.nodes:
        if exports_to(n, gm) & forbidden:
            key = _name(n)
            out[key] = out.get(key, 0) + 1
    return out


def _name(n: fx.Node) -> str:
    t = n.target
    if n.op == "call_module":
        gm = cast(fx.GraphModule, n.graph.owning_module)  # call_module: a module's graph
        return "nn." + type(get_attr(gm, str(t))).__name__
    if n.op == "call_method":
        return f"Tensor.{t}"
    if isinstance(t, torch._ops.OpOverload):
        return "aten." + str(t._schema.name).split("::")[-1]
    return getattr(t, "__name__", str(t))


def remaining(gm: fx.GraphModule, forbidden: frozenset[str]) -> list[str]:
    """One description per node left that exports to a forbidden ONNX op."""
    out = []
    for n in gm.graph.nodes:
        ops = exports_to(n, gm) & forbidden
        if ops:  # named as the user wrote it where normalising recorded that (report's op)
            name = n.meta.get("fxl_origin") or f"{_name(n)} '{n.name}'"
            out.append(f"{name} (exports to {', '.join(sorted(ops))})")
    return out


FAMILY_OPS: frozenset[str] = frozenset().union(
    *_ATEN.values(), *_TORCH.values(), *_METHODS.values(), *_MODULES.values(),
    _REPEAT_INTERLEAVE_TENSOR, {"ScatterND"},
)


def forbidden_by(target: Target | None) -> frozenset[str]:
    """The census ops a target lacks (None: the gather family, the first issue's default)."""
    if target is None:
        return frozenset({_G, _GE, _GND})
    return frozenset(op for op in FAMILY_OPS if not target.allows(op))


# ---- running natively: the ops a target has, under the conditions it states


def native(node: fx.Node, gm: fx.GraphModule, target: Target | None) -> str:
    """The reason a node is kept for `target` ("target 'x' runs Gather natively") when the
    target has every ONNX op the node exports to and the node meets the conditions the
    target states on them (Kneron: a Gather of a single index); "" when it must be lowered.
    Normalising and the passes both ask this one question."""
    if target is None:
        return ""
    ops = exports_to(node, gm)
    if not ops or not all(target.allows(o) for o in ops):
        return ""
    if any(o in target.conditions for o in ops):
        facts = operand_facts(node, gm)
        if any(target.broken_condition(o, facts) for o in ops):
            return ""
    return f"target '{target.name}' runs {', '.join(sorted(ops))} natively"


def operand_facts(node: fx.Node, gm: fx.GraphModule) -> Facts:
    """What the ONNX gather a node exports to will see: its indices' size, rank and
    constness and its data's constness, for each spelling of a lookup (nn.Embedding,
    F.embedding, aten.embedding, index_select, select, x[i], aten.index, gather). A spelling
    not listed here tells nothing, and an unknown fact never meets a condition."""
    from .graph import is_const
    from .targets import Facts

    data: object = None
    idx: object = None
    name = op_name(node) if node.op in ("call_function", "call_method") else ""
    if node.op == "call_module" and isinstance(get_attr(gm, str(node.target)), nn.Embedding):
        data, idx = True, node.args[0]
    elif node.target is F.embedding:
        idx, data = arg(node, 0, "input"), arg(node, 1, "weight")
    elif node.target is torch.ops.aten.embedding.default:
        data, idx = node.args[0], node.args[1]
    elif name in ("index_select", "gather"):
        data, idx = node.args[0], arg(node, 2, "index")
    elif name == "select" or node.target is torch.ops.aten.select.int:
        data, idx = node.args[0], arg(node, 2, "index")
    elif node.target is operator.getitem and isinstance(node.args[0], fx.Node):
        key = node.args[1]
        items = [k for k in (key if isinstance(key, tuple) else (key,))
                 if not (isinstance(k, slice) and k == slice(None)) and k is not None]
        data, idx = node.args[0], items[0] if len(items) == 1 else None
    elif node.target is torch.ops.aten.index.Tensor:
        given = [k for k in node.args[1] if k is not None]  # type: ignore[union-attr]
        data, idx = node.args[0], given[0] if len(given) == 1 else None
    numel: int | None
    rank: int | None
    if isinstance(idx, int) and not isinstance(idx, bool):
        numel, rank, const = 1, 0, True
    elif isinstance(idx, fx.Node):
        s = spec(idx)
        numel = None if s is None else int(torch.Size(s.shape).numel())
        rank = None if s is None else s.rank
        const = is_const(idx)
    else:
        return Facts()
    data_const = data if isinstance(data, bool) else (
        is_const(data) if isinstance(data, fx.Node) else None)
    return Facts(indices_numel=numel, indices_rank=rank, indices_const=const,
                 data_const=data_const)


# ---- the model's own multiply-adds (what a rewrite's cost is measured against)

_PRODUCTS = {"linear", "addmm", "mm", "bmm", "matmul", "conv1d", "conv2d", "conv3d",
             "convolution", "baddbmm", "scaled_dot_product_attention"}


def graph_macs(gm: fx.GraphModule) -> int:
    """Multiply-adds per call of the graph's matrix products and convolutions (linear layers,
    matmuls, convs, attention), from the static shapes; 0 where shapes are unknown. The
    yardstick the report's advice measures a rewrite's added cost against."""
    total = 0
    for n in gm.graph.nodes:
        out = spec(n)
        if out is None or n.op not in ("call_module", "call_function", "call_method"):
            continue
        if n.op == "call_module":
            mod = get_attr(gm, str(n.target))
            if isinstance(mod, nn.Linear):
                total += out.numel * mod.in_features
            elif isinstance(mod, nn.modules.conv._ConvNd):
                total += out.numel * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
            continue
        name = op_name(n) if n.target is not operator.matmul else "matmul"
        if name not in _PRODUCTS:
            continue
        args = [spec(a) for a in n.args[:3]]
        if name == "scaled_dot_product_attention":
            q, key = args[0], args[1]
            if q is not None and key is not None:  # q @ k^T, then weights @ v
                total += (q.numel + out.numel) * key.shape[-2]
        elif name in ("linear", "conv1d", "conv2d", "conv3d", "convolution"):
            w = args[1]
            if w is not None and w.rank >= 2:
                total += out.numel * math.prod(w.shape[1:])
        else:  # mm, bmm, matmul, addmm / baddbmm (input, a, b): the contracted dim of `a`
            a = args[1] if name in ("addmm", "baddbmm") else args[0]
            if a is not None and a.rank >= 1:
                total += out.numel * a.shape[-1]
    return total
