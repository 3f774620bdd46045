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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class OwnIndexGather:
    """`aten.gather.default(x, dim, idx)` with idx the indices of a topk / sort / argsort."""

    node: fx.Node
    x: fx.node.Argument
    dim: int
    op: fx.Node  # the topk / sort / argsort node idx comes from
    kind: str  # "topk", "sort" or "argsort"


@dataclass(frozen=True, kw_only=True)
class ValuesPlan(Plan):
    """A topk / sort: its values output replaces the gather."""

    op: fx.Node  # the topk / sort node


@dataclass(frozen=True, kw_only=True)
class SortPlan(Plan):
    """An argsort: the values of a sort like it replace the gather."""

    x: fx.Node  # the argsort's input, the gathered tensor
    dim: int  # the argsort's dim, as it gives it
    descending: bool
    stable: bool  # the argsort was stable: the sort must be too


TopkPlan = ValuesPlan | SortPlan


class TopkGatherToValues(RewritePass[OwnIndexGather, TopkPlan]):
    name = "topk_gather_to_values"

    def match(self, node: fx.Node, ctx: Context) -> OwnIndexGather | None:
        if node.op != "call_function" or node.target is not GATHER:
            return None
        x, dim, idx = node.args[:3]
        source = _source_op(idx)
        if source is None:  # 1.
            return None
        op, kind = source
        return OwnIndexGather(node, x, cast(int, dim), op, kind)  # aten.gather's dim is an int

    def check(self, m: OwnIndexGather, ctx: Context) -> TopkPlan | Skip:
        op, kind, x = m.op, m.kind, m.x
        if op.args[0] is not x:  # 2.
            return Skip(f"the index comes from a {kind} of another tensor, not of the gathered one")
        sx = ctx.spec(x)
        if sx is None or not isinstance(x, fx.Node):  # (no spec: not a node)
            return Skip("shapes unknown: pass example_inputs")
        d = int(m.dim) % sx.rank
        if _dim(op, kind, sx.rank) != d:  # 3.
            return Skip(f"the {kind} runs along another dim than the gather")
        detail = f"gather at its own {kind} indices: the {kind} values, no mask"
        if kind != "argsort":
            return ValuesPlan(detail=detail, op=op)
        if op.target is aten.argsort.stable:
            dim, desc = op.kwargs.get("dim", -1), op.kwargs.get("descending", False)
        else:
            dim, desc = _arg(op, 1, "dim", -1), _arg(op, 2, "descending", False)
        return SortPlan(detail=detail, x=x, dim=cast(int, dim), descending=cast(bool, desc),
                        stable=bool(op.kwargs.get("stable", False)))

    def replace(self, plan: TopkPlan, b: Builder) -> fx.Node:
        if isinstance(plan, ValuesPlan):
            with b.graph.inserting_after(plan.op):
                return b.graph.call_function(operator.getitem, (plan.op, 0))
        x = b.proxy(plan.x)
        dim, desc = plan.dim, plan.descending
        # `stable=` selects aten.sort.stable, which the ONNX exporter cannot convert: pass
        # it only when the argsort was stable itself
        out = (torch.sort(x, dim=dim, descending=desc, stable=True) if plan.stable
               else torch.sort(x, dim=dim, descending=desc))
        return node_of(out[0])
