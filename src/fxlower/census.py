"""Which graph nodes the ONNX exporter turns into Gather-family nodes.

Found by exporting (torch 2.13, `torch.onnx.export(..., dynamo=True)`, static shapes; the
probe's table is docs/exporter-ops.md), not by guessing. The graph-level census is a fast
early warning; the proof is the exported file (`fxlower.check`).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import get_attr, spec

aten = torch.ops.aten

# ATen op (overload packet) -> ONNX nodes it exports to.
_ATEN: dict[object, str] = {
    aten.gather: "GatherElements",
    aten.take_along_dim: "GatherElements",
    aten.index_select: "Gather",
    aten.embedding: "Gather",
    aten.embedding_bag: "Gather",
    aten._embedding_bag: "Gather",
    aten.select: "Gather",
    aten.index: "GatherND",
    aten.take: "GatherND",
    aten.unfold: "Gather",
    aten.im2col: "Gather",
    aten.masked_scatter: "Gather + ScatterND",
    aten.bucketize: "GatherND",
    aten.masked_select: "GatherND (legacy exporter; dynamo cannot export it)",
}
_TORCH: dict[object, str] = {
    torch.gather: "GatherElements",
    torch.take_along_dim: "GatherElements",
    torch.index_select: "Gather",
    F.embedding: "Gather",
    F.embedding_bag: "Gather",
    torch.select: "Gather",
    torch.take: "GatherND",
    F.unfold: "Gather",
    torch.bucketize: "GatherND",
    torch.masked_select: "GatherND",
}
_METHODS = {"gather": "GatherElements", "take_along_dim": "GatherElements",
            "index_select": "Gather", "select": "Gather", "take": "GatherND",
            "unfold": "Gather", "masked_scatter": "Gather + ScatterND",
            "masked_select": "GatherND"}
_MODULES: dict[type, str] = {
    nn.Embedding: "Gather",
    nn.EmbeddingBag: "Gather",
    nn.Unfold: "Gather",
    nn.MultiheadAttention: "Gather",
}


# Leaf modules of symbolic tracing whose forward exports to Gather-family nodes and which no
# pass handles as a module: capture prefers torch.export, which decomposes them.
OPAQUE_MODULES: tuple[type, ...] = (nn.MultiheadAttention, nn.EmbeddingBag, nn.Unfold)


def _packet(t: object) -> object:
    return getattr(t, "overloadpacket", t)


def gather_kind(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """The Gather-family ONNX node(s) this graph node exports to, or None."""
    if node.op == "call_module":
        mod = get_attr(gm, str(node.target))
        for cls, onnx_op in _MODULES.items():
            if isinstance(mod, cls):
                return onnx_op
        return None
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    if node.op != "call_function":
        return None
    t = node.target
    if t is operator.getitem and isinstance(node.args[0], fx.Node):
        key = node.args[1]
        items = key if isinstance(key, tuple) else (key,)
        if spec(node.args[0]) is not None and any(
            (isinstance(k, int) and not isinstance(k, bool)) or isinstance(k, (fx.Node, list))
            for k in items
        ):
            return "Gather/GatherND"
        return None
    if isinstance(t, torch._ops.OpOverload):
        if t is aten.repeat_interleave.self_Tensor or t is aten.repeat_interleave.Tensor:
            return "Gather + GatherND"
        return _ATEN.get(_packet(t))
    return _TORCH.get(t)


def census(gm: fx.GraphModule) -> dict[str, int]:
    """Count the graph's nodes that would export to Gather-family ONNX nodes, by op."""
    out: dict[str, int] = {}
    for n in gm.graph.nodes:
        if gather_kind(n, gm) is not None:
            key = _name(n)
            out[key] = out.get(key, 0) + 1
    return out


def _name(n: fx.Node) -> str:
    t = n.target
    if n.op == "call_module":
        return "nn." + type(get_attr(n.graph.owning_module, str(t))).__name__  # type: ignore[arg-type]
    if n.op == "call_method":
        return f"Tensor.{t}"
    if isinstance(t, torch._ops.OpOverload):
        return "aten." + str(t._schema.name).split("::")[-1]
    return getattr(t, "__name__", str(t))


def remaining(gm: fx.GraphModule) -> list[str]:
    """One description per node left that exports to a Gather-family node."""
    return [
        f"{_name(n)} '{n.name}' (exports to {gather_kind(n, gm)})"
        for n in gm.graph.nodes
        if gather_kind(n, gm) is not None
    ]
