"""topk_gather_to_values: gathering a tensor at its own top-k / sort indices is the values
output the same op already computed, so no mask is needed at all.

Algebra (d the same dim, x the very same node):
    gather(x, d, topk(x, k, d, largest, sorted).indices) == topk(...).values
    gather(x, d, sort(x, d, descending).indices)           == sort(...).values
    gather(x, d, argsort(x, d, descending))                 == sort(x, d, descending).values
`values[..., j, ...]` is by definition `x[..., indices[..., j, ...], ...]`, so the identity is
exact for every value, NaN and -0.0 included. `argsort` is `sort(...).indices` in PyTorch (the
same kernel and tie order), so the sort that replaces it picks the same elements.

Legality (each a skip reason):
1. the index is the indices output of a topk / sort / argsort node, used without change;
2. that op reads the same node the gather reads;
3. along the same dim as the gather.
Candidates failing 1 are not reported (ordinary gathers); 2 and 3 are.

Cost: none added; the gather and its mask disappear. TopK stays (it is not a gather).
"""

from __future__ import annotations

import operator
from typing import Any, cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.normalise import GATHER
from fxlower.rewrite import Context, Plan, RewritePass, Skip

aten = torch.ops.aten
_TOPK = {torch.topk, aten.topk.default, "topk"}
_SORT = {torch.sort, aten.sort.default, aten.sort.stable, "sort"}
_ARGSORT = {torch.argsort, aten.argsort.default, aten.argsort.stable, "argsort"}


def _arg(node: fx.Node, pos: int, name: str, default: Any) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def _source_op(idx: Any) -> tuple[fx.Node, str] | None:
    """(op node, kind) when idx is topk/sort `.indices` (or `[1]`) or an argsort."""
    if not isinstance(idx, fx.Node):
        return None
    if idx.target in _ARGSORT:
        return idx, "argsort"
    if idx.op == "call_function" and idx.target is operator.getitem and idx.args[1] == 1:
        src = idx.args[0]
    elif idx.op == "call_function" and idx.target is getattr and idx.args[1] == "indices":
        src = idx.args[0]
    else:
        return None
    if isinstance(src, fx.Node) and src.target in _TOPK:
        return src, "topk"
    if isinstance(src, fx.Node) and src.target in _SORT:
        return src, "sort"
    return None


def _dim(op: fx.Node, kind: str, rank: int) -> int:
    if kind == "topk":
        d = _arg(op, 2, "dim", -1)
    elif op.target in (aten.sort.stable, aten.argsort.stable):
        d = op.kwargs.get("dim", -1)
    else:
        d = _arg(op, 1, "dim", -1)
    return int(d) % rank


class TopkGatherToValues(RewritePass):
    name = "topk_gather_to_values"

    def match(self, node: fx.Node, ctx: Context) -> bool:
        return (node.op == "call_function" and node.target is GATHER
                and _source_op(node.args[2]) is not None)

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        x, dim, idx = node.args[:3]
        op, kind = cast("tuple[fx.Node, str]", _source_op(idx))  # match() found it
        if op.args[0] is not x:
            return Skip(f"the index comes from a {kind} of another tensor, not of the gathered one")
        sx = ctx.spec(x)
        if sx is None:
            return Skip("shapes unknown: pass example_inputs")
        d = int(cast(int, dim)) % sx.rank  # aten.gather's dim is an int
        if _dim(op, kind, sx.rank) != d:
            return Skip(f"the {kind} runs along another dim than the gather")
        return Plan(detail=f"gather at its own {kind} indices: the {kind} values, no mask",
                    data={"op": op, "kind": kind})

    def replace(self, node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
        op, kind = plan.data["op"], plan.data["kind"]
        if kind != "argsort":
            with b.graph.inserting_after(op):
                return b.graph.call_function(operator.getitem, (op, 0))
        x = b.proxy(op.args[0])
        stable = bool(op.kwargs.get("stable", False))
        if op.target is aten.argsort.stable:
            dim, desc = op.kwargs.get("dim", -1), op.kwargs.get("descending", False)
        else:
            dim, desc = _arg(op, 1, "dim", -1), _arg(op, 2, "descending", False)
        # `stable=` selects aten.sort.stable, which the ONNX exporter cannot convert: pass
        # it only when the argsort was stable itself
        out = (torch.sort(x, dim=dim, descending=desc, stable=True) if stable
               else torch.sort(x, dim=dim, descending=desc))
        return node_of(out[0])
