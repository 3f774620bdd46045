"""masked_scatter_to_mask_matmul: `masked_scatter` becomes a prefix count and a one-hot
selection.

Covers `Tensor.masked_scatter`, `Tensor.masked_scatter_`, `torch.masked_scatter` and
`aten.masked_scatter`. The exporter makes NonZero + Gather + ScatterND of them.

Algebra: with x and the (broadcast) mask flattened to M elements and source flattened to
Ns, the i-th True position (row-major) takes source[i]:
    pos[j] = number of True in mask[:j]                  (exclusive prefix count)
    out[j] = where(mask[j], source[pos[j]], x[j])
The prefix count has no CumSum: with the mask as R rows of C = ceil(sqrt(M)) elements,
    pos = A @ U_C + (rowsums @ U_R)[:, None]
where U is the strictly upper-triangular ones matrix (constants). source[pos] is a one-hot
selection (kernels.take_rows). A constant mask is counted when lowering.

Legality (each a skip reason):
1. static shapes of x, mask and source are known (pass example_inputs);
2. the mask broadcasts to x's shape (not x to a larger one);
3. x has fewer than 2**24 elements (the counts are exact float32 integers only below that);
4. an in-place `masked_scatter_` writes into a tensor made inside forward (a clone, zeros,
   arithmetic) of which no view was taken before;
5. source has x's dtype (PyTorch raises otherwise).

Numerics: no duplicates (each True position takes its own source element). Exact for every
dtype and value: the counts are integers below 2**24 in float32; the selection carries
non-finite class codes for float sources, integers in their own dtype, -0.0 restored.
A source with fewer elements than True entries: PyTorch raises; here the missing ones read 0.

Cost: the prefix count R*C*C + R*R MACs (~M**1.5), the selection M*Ns MACs (twice that for
float sources that may hold NaN/inf/-0.0: the code path has one row), mask M*Ns.

Target legality: refused, naming the missing ops, when the target lacks any op in
`scatter_ops.MASK_OPS` (this rewrite has a single formulation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import gather as kernels
from fxlower.kernels import scatter as so
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import ScatterCall, known_finite


@dataclass(frozen=True)
class CountedMask:
    """A constant mask, counted when lowering."""

    value: torch.Tensor  # the mask broadcast to x's shape and flattened: bool [M]
    pos: torch.Tensor  # its exclusive prefix count: int64 [M]


@dataclass(frozen=True)
class RuntimeMask:
    """A mask read at run time, counted by triangular matmuls."""

    node: fx.Node
    shape: tuple[int, ...]  # broadcast to x's shape when smaller
    dtype: torch.dtype  # cast to bool when another dtype


@dataclass(frozen=True, kw_only=True)
class MaskedScatterPlan(Plan):
    op: so.ScatterOp
    mask: CountedMask | RuntimeMask
    x_shape: tuple[int, ...]
    m: int  # M, x's elements
    ns: int  # Ns, source's elements
    dtype: torch.dtype  # x's (and source's)
    v_finite: bool  # source holds no NaN/inf/-0.0 (or is not a float)


class MaskedScatterToMaskMatmul(RewritePass[ScatterCall, MaskedScatterPlan]):
    name = "masked_scatter_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> ScatterCall | None:
        op = so.scatter_op(node)
        return ScatterCall(node, op) if op is not None and op.kind == "masked_scatter" else None

    def check(self, m: ScatterCall, ctx: Context) -> MaskedScatterPlan | Skip:
        problem_t = so.target_problem(ctx.options.target, so.MASK_OPS, int64_indices=False)
        if problem_t is not None:  # target legality
            return Skip(problem_t)
        op = m.op
        sx, sm, ss = ctx.spec(op.x), ctx.spec(op.mask), ctx.spec(op.src)
        if sx is None or sm is None or ss is None:  # 1.
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        try:
            full = tuple(torch.broadcast_shapes(sx.shape, sm.shape))  # type: ignore[no-untyped-call]
        except RuntimeError:  # 2.
            return Skip("the mask does not broadcast with the tensor written into")
        if full != tuple(sx.shape):  # 2.
            return Skip(f"the mask broadcasts the tensor written into to a larger shape {full}")
        count = sx.numel
        if count >= so.MAX_PREFIX:  # 3.
            return Skip(f"{count} elements: prefix counts in float32 are exact only below 2**24")
        problem = so.inplace_problem(m.node, op)
        if problem:  # 4.
            return Skip(problem)
        if ss.dtype != sx.dtype:  # 5.
            return Skip(f"source has dtype {ss.dtype}, the tensor written into {sx.dtype}")
        ns = ss.numel
        v_finite = known_finite(op.src, ctx)
        select = count * ns * (1 if v_finite or not sx.dtype.is_floating_point else 2)
        if ctx.is_const(op.mask):
            mv = ctx.value(op.mask).to(torch.bool).expand(sx.shape).reshape(-1)
            pos = torch.cumsum(mv.to(torch.int64), 0) - mv.to(torch.int64)
            return MaskedScatterPlan(
                detail=f"constant mask: precomputed one-hot, {count} positions from "
                       f"{ns} source elements", macs=select,
                op=op, mask=CountedMask(mv, pos), x_shape=sx.shape, m=count, ns=ns,
                dtype=sx.dtype, v_finite=v_finite)
        assert isinstance(op.mask, fx.Node)  # it has a spec
        return MaskedScatterPlan(
            detail=f"prefix count by triangular matmuls + one-hot matmul, {count} positions "
                   f"from {ns} source elements", macs=so.prefix_cost(count) + select,
            mask_elems=count * ns, op=op, mask=RuntimeMask(op.mask, sm.shape, sm.dtype),
            x_shape=sx.shape, m=count, ns=ns, dtype=sx.dtype, v_finite=v_finite)

    def replace(self, plan: MaskedScatterPlan, b: Builder) -> fx.Node:
        op, m, ns, dtype = plan.op, plan.m, plan.ns, plan.dtype
        x = b.proxy(op.x).reshape(m)
        if isinstance(plan.mask, CountedMask):
            mask = b.const(plan.mask.value, "masked_scatter_mask")
            pos = plan.mask.pos
        else:
            mask = b.proxy(plan.mask.node)
            if plan.mask.dtype != torch.bool:
                mask = mask.to(torch.bool)
            if tuple(plan.mask.shape) != tuple(plan.x_shape):
                mask = mask.expand(plan.x_shape)
            mask = mask.reshape(m)
            pos = so.exclusive_prefix_count(b, mask, m).to(torch.int64)
        src = b.proxy(op.src).reshape(1, ns, 1)
        written = kernels.take_rows(b, src, pos, pre=1, n=ns, post=1, k=m, batched=False,
                                    dtype=dtype, known_finite=plan.v_finite).reshape(m)
        out = so.select(mask, written, x, dtype, signed=not plan.v_finite)
        out_node = node_of(out.reshape(plan.x_shape))
        so.redirect_later_uses(op, b.anchor, out_node)
        return out_node
