"""adaptive_pool_to_mean: adaptive average pooling whose windows tile the input becomes a
reshape and a mean.

Covers `nn.AdaptiveAvgPool1d/2d`, `F.adaptive_avg_pool1d/2d`, `torch.adaptive_avg_pool1d`
and `aten.adaptive_avg_pool1d/2d` / `aten._adaptive_avg_pool2d`.

Why: the exporter (torch 2.13) decomposes adaptive average pooling and, when the input is
not contiguous (Swin's pooler pools `x.transpose(1, 2)`, a channels-last permute before a
global pool), writes the result through `as_strided` to keep the kernel's strides:
a `Gather` in the file that no index in the model asked for. A mean over reshaped windows
exports to `ReduceMean` whatever the layout.

Algebra: with every pooled size `n` a multiple of its output size `o`, window `j` is
`x[j*n/o : (j+1)*n/o]`, so `adaptive_avg_pool(x, o) == x.unflatten(-1, (o, n/o)).mean(-1)`,
applied to each pooled dim (2-D: the two window dims are averaged together).

Legality:
1. the input's shape is known when lowering;
2. every pooled size is a multiple of its output size (else windows vary in length or
   overlap: the exporter emits `GatherND` (and `Gather`) for them, and no reshape spells
   them; refused, the node stays and the report names it);
3. the target runs `ReduceMean` (the exporter may have written `AveragePool` or
   `GlobalAveragePool`: the rewrite never brings in an op the target lacks).

Numerics: the same sums divided by the same counts, in another order: equal within fp32
rounding (what the exported file computes anyway: the exporter's own decomposition is a
`ReduceMean`), not bit-exact in general.
Cost: no multiply-adds, no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from fxlower.census import pooled_sizes
from fxlower.graph import Builder, arg, get_attr, node_of, op_name
from fxlower.rewrite import Context, Plan, RewritePass, Skip

_NAMES = {"adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "_adaptive_avg_pool2d": 2}


@dataclass(frozen=True)
class Pool:
    """An adaptive average pool: `nn.AdaptiveAvgPool1d/2d` or one of the functions."""

    node: fx.Node
    x: fx.node.Argument  # the pooled input (None when the call has no arguments)
    dims: int  # pooled dims, the last ones: 1 or 2
    output_size: object  # as the module or the call gives it


@dataclass(frozen=True, kw_only=True)
class MeanPlan(Plan):
    x: fx.Node
    dims: int
    windows: tuple[int, ...]  # the input reshaped: each pooled n as (o, n / o)


def _pooled(node: fx.Node, ctx: Context) -> tuple[int, object] | None:
    """(number of pooled dims, output_size argument) of an adaptive average pool node."""
    if node.op == "call_module":
        mod = get_attr(ctx.gm, str(node.target))
        if isinstance(mod, nn.AdaptiveAvgPool1d):
            return 1, mod.output_size
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return 2, mod.output_size
        return None
    if node.op != "call_function" or op_name(node) not in _NAMES:
        return None
    return _NAMES[op_name(node)], arg(node, 1, "output_size")


class AdaptivePoolToMean(RewritePass[Pool, MeanPlan]):
    name = "adaptive_pool_to_mean"

    def match(self, node: fx.Node, ctx: Context) -> Pool | None:
        pooled = _pooled(node, ctx)
        if pooled is None:
            return None
        dims, out = pooled
        return Pool(node, node.args[0] if node.args else None, dims, out)

    def check(self, m: Pool, ctx: Context) -> MeanPlan | Skip:
        dims, out = m.dims, m.output_size
        s = ctx.spec(m.x)
        if s is None or s.rank < dims or not isinstance(m.x, fx.Node):  # 1. (no spec: not a node)
            return Skip("the input's shape is not known when lowering")
        ins = s.shape[-dims:]
        sizes = pooled_sizes(s.shape, out, dims)
        if sizes is None:
            return Skip(f"output size {out!r} is not known when lowering")
        bad = [(n, o) for n, o in zip(ins, sizes, strict=True) if n % o]
        if bad:  # 2.
            n, o = bad[0]
            return Skip(f"pooled size {n} is not a multiple of output size {o}: the windows "
                        f"vary or overlap (the exporter emits GatherND for them)")
        target = ctx.options.target
        if target is not None and not target.allows("ReduceMean"):  # 3.
            return Skip(f"target '{target.name}' has no ReduceMean")
        split = [d for n, o in zip(ins, sizes, strict=True) for d in (o, n // o)]
        return MeanPlan(detail=f"{tuple(ins)} -> {sizes}: mean over windows of "
                               f"{tuple(n // o for n, o in zip(ins, sizes, strict=True))}",
                        x=m.x, dims=dims, windows=(*s.shape[:-dims], *split))

    def replace(self, plan: MeanPlan, b: Builder) -> fx.Node:
        x = b.proxy(plan.x)
        windows = [-1] if plan.dims == 1 else [-3, -1]
        y = torch.ops.aten.mean.dim(torch.ops.aten.reshape.default(x, list(plan.windows)), windows)
        return node_of(y)
