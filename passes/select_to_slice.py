"""select_to_slice: integer select becomes a Slice and a Squeeze.

Covers `x[:, 0]`, `x[..., -1]`, `x.select(d, i)`, `torch.select`, `unbind(x, d)[i]` and
`aten.select.int` (all normalised to `aten.select.int(x, d, i)`).

Algebra: `select(x, d, i) == slice(x, d, i, i + 1).squeeze(d)`; for i == -1 the slice is
`[-1:]` (an end of i + 1 == 0 would be empty).

Legality:
1. the index is an int known when lowering (a literal, or a size computed from static
   shapes); a tensor-valued index is advanced indexing, handled by index_to_mask_matmul.
2. with shapes known, the index is in range (torch itself raises otherwise).

Numerics: a slice copies values: bit-exact for every dtype and value.
Cost: no multiply-adds, no mask.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.normalise import SELECT, int_value
from fxlower.rewrite import Context, Plan, RewritePass, Skip


@dataclass(frozen=True)
class Select:
    """`aten.select.int(x, dim, index)`, the one spelling normalising leaves."""

    node: fx.Node
    x: fx.Node
    dim: int
    index: Any  # an int, or a node computing one


@dataclass(frozen=True, kw_only=True)
class SlicePlan(Plan):
    x: fx.Node
    dim: int
    start: int
    stop: int  # sys.maxsize for the last element (an end of i + 1 == 0 would be empty)


class SelectToSlice(RewritePass[Select, SlicePlan]):
    name = "select_to_slice"

    def match(self, node: fx.Node, ctx: Context) -> Select | None:
        if node.op != "call_function" or node.target is not SELECT:
            return None
        x, dim, index = node.args
        return Select(node, cast(fx.Node, x), cast(int, dim), index)

    def check(self, m: Select, ctx: Context) -> SlicePlan | Skip:
        i = int_value(m.index)
        if i is None:  # 1.
            return Skip("the index is not an int known when lowering")
        s = ctx.spec(m.x)
        if s is not None:  # 2.
            n = s.shape[m.dim]
            if not -n <= i < n:
                return Skip(f"index {i} is out of range for a dimension of size {n}")
        stop = sys.maxsize if i == -1 else i + 1
        return SlicePlan(detail=f"slice [{i}:{'' if i == -1 else i + 1}] along dim {m.dim}",
                         x=m.x, dim=m.dim, start=i, stop=stop)

    def replace(self, plan: SlicePlan, b: Builder) -> fx.Node:
        y = torch.ops.aten.slice.Tensor(b.proxy(plan.x), plan.dim, plan.start, plan.stop)
        return node_of(torch.ops.aten.squeeze.dim(y, plan.dim))
