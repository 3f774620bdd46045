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
from typing import cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.normalise import SELECT, int_value
from fxlower.rewrite import Context, Plan, RewritePass, Skip


class SelectToSlice(RewritePass):
    name = "select_to_slice"

    def match(self, node: fx.Node, ctx: Context) -> bool:
        return node.op == "call_function" and node.target is SELECT

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        _, dim_arg, index = node.args
        dim = cast(int, dim_arg)  # aten.select.int takes an int dim
        i = int_value(index)
        if i is None:
            return Skip("the index is not an int known when lowering")
        s = ctx.spec(node.args[0])
        if s is not None:
            n = s.shape[dim]
            if not -n <= i < n:
                return Skip(f"index {i} is out of range for a dimension of size {n}")
        stop = sys.maxsize if i == -1 else i + 1
        return Plan(detail=f"slice [{i}:{'' if i == -1 else i + 1}] along dim {dim}",
                    data={"dim": dim, "start": i, "stop": stop})

    def replace(self, node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
        x = b.proxy(cast(fx.Node, node.args[0]))
        d = plan.data
        y = torch.ops.aten.slice.Tensor(x, d["dim"], d["start"], d["stop"])
        return node_of(torch.ops.aten.squeeze.dim(y, d["dim"]))
