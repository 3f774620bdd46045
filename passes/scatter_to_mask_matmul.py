"""scatter_to_mask_matmul: `scatter` and `scatter_add` become one-hot selections and sums.

Covers `torch.scatter` / `Tensor.scatter` / `Tensor.scatter_` (src or value), `scatter_add`
(and `scatter_add_`), `scatter(..., reduce='add')`, `scatter_reduce(..., 'sum')` with
either `include_self`, and their ATen overloads (`aten.scatter.src/value/reduce/
value_reduce`, `aten.scatter_add`, `aten.scatter_reduce.two`). The exporter makes
ScatterElements of them.

Algebra: `out[..., idx[..., k, ...], ...] = src[..., k, ...]` along `dim` (size N in x, K in
idx; idx no larger than x or src along the other dims: x outside idx's extent is copied). As
for gather, the other dims split into *batch* dims (idx varies along them) and *broadcast*
dims (idx constant along them: `ids.unsqueeze(-1).expand(..., D)`, found by following idx
back through expand / repeat / value-keeping casts, or from a constant idx's values). With
x's region viewed as [B, N, R] and src as [B, K, R], idx as [B, K]:
- assignment (last writer along `dim` wins):
      last[b, n] = max_k where(idx[b, k] == n, k, -1)          (ReduceMax, no CumSum)
      out = where(last >= 0, onehot(last)[B, N, K] @ src[B, K, R], x)   (kernels.take_rows)
  the `value=` form needs no selection: out = where(last >= 0, value, x);
- sum (scatter_add, reduce 'sum'/'add'): out = x + sum of src[b, k, :] over idx[b, k] == n,
  without include_self the hit targets start from +0.

Legality (each a skip reason):
1. static shapes of x, idx and src are known (pass example_inputs);
2. the reduction is a sum: reduce='multiply' / 'prod' / 'mean' / 'amax' / 'amin' are not
   lowered (not assignment or a sum);
3. an in-place `Tensor.scatter_` / `scatter_add_` writes into a tensor made inside forward
   (a clone, zeros, arithmetic) of which no view was taken before;
4. src has x's dtype (PyTorch raises otherwise) and idx has x's rank;
5. idx is no larger than x and src along the other dims (PyTorch raises otherwise);
6. a constant idx is in range (PyTorch raises otherwise).

Duplicates and numerics (scatter_ops.py): assignment keeps the value of the LAST writer
along `dim` (PyTorch's CPU scatter runs serially along `dim` and does the same; it documents
the result as undefined); bit-exact for every dtype and value (non-finite class codes,
integers in their own dtype, -0.0 restored). Sums: integers exact in their own dtype; floats
summed in index order, as PyTorch's CPU kernel does, bit-exact while K <= 64 (float16 and
bfloat16 accumulated in float32 and rounded once, as PyTorch does); with K > 64 writers a
one-hot matmul sums in another order: within float rounding, not bit-exact (the report says
so). Out-of-range run-time indices write nothing where PyTorch raises.

Cost (B, K, N, R as above): assignment B*K*N compares + B*N*K*R MACs (plus 1/8 for the code
path of float sources), mask B*K*N; sums B*K*N*R adds (unrolled) or MACs (matmul).

Target legality: refused, naming the missing ops, when the target lacks any op in
`scatter_ops.MASK_OPS` (this rewrite has a single formulation), or has no int64 (indices
are compared in int64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import Tensor
from fxlower.kernels import scatter as so
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import ScatterCall, broadcast_core, known_finite, sum_cost


@dataclass(frozen=True)
class ConstCore:
    """A constant idx, cut to its core (the broadcast dims kept at size 1)."""

    value: torch.Tensor  # int64, in range
    shape: tuple[int, ...]  # the core's shape, aligned to idx's rank


@dataclass(frozen=True)
class NodeCore:
    """The node idx was broadcast from (`broadcast_core`), read at run time."""

    node: fx.Node
    shape: tuple[int, ...]  # its shape aligned to idx's rank
    own_shape: tuple[int, ...]  # its own shape (a lower rank needs a reshape)
    dtype: torch.dtype  # cast to int64 when another int type


@dataclass(frozen=True, kw_only=True)
class ScatterPlan(Plan):
    """x's region viewed as [B, N, R], src as [B, K, R], idx as [B, K] (module docstring)."""

    op: so.ScatterOp
    dim: int
    n: int  # N, x's size along dim
    k: int  # K, idx's size along dim: the writers
    x_shape: tuple[int, ...]
    idx_shape: tuple[int, ...]
    src_shape: tuple[int, ...] | None  # None for a scalar value
    dtype: torch.dtype  # x's (and src's)
    x_finite: bool  # x holds no NaN/inf/-0.0 (or is not a float)
    v_finite: bool  # nor do the values
    core: ConstCore | NodeCore  # the index's core
    bdims: tuple[int, ...]  # batch dims: idx varies along them, flattened to B
    rdims: tuple[int, ...]  # broadcast dims: idx constant along them, flattened to R
    bsz: int  # B
    rsz: int  # R


class ScatterToMaskMatmul(RewritePass[ScatterCall, ScatterPlan]):
    name = "scatter_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> ScatterCall | None:
        op = so.scatter_op(node)
        return ScatterCall(node, op) if op is not None and op.kind == "scatter" else None

    def check(self, m: ScatterCall, ctx: Context) -> ScatterPlan | Skip:
        problem_t = so.target_problem(ctx.options.target, so.MASK_OPS, int64_indices=True)
        if problem_t is not None:  # target legality
            return Skip(problem_t)
        op = m.op
        tensor_src = isinstance(op.src, fx.Node)
        sx, si = ctx.spec(op.x), ctx.spec(op.index)
        ss = ctx.spec(op.src) if tensor_src else None
        if sx is None or si is None or (tensor_src and ss is None):  # 1.
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        if op.reduce is not None:  # 2.
            return Skip(f"reduce='{op.reduce}' is not lowered: only assignment and sums "
                        "(scatter_add, reduce='sum' or 'add') are")
        problem = so.inplace_problem(m.node, op)
        if problem:  # 3.
            return Skip(problem)
        if ss is not None and ss.dtype != sx.dtype:  # 4.
            return Skip(f"src has dtype {ss.dtype}, the tensor written into {sx.dtype}")
        if tensor_src is False and not isinstance(op.src, (int, float, bool)):
            return Skip("the scattered value is neither a tensor nor a number")
        if si.rank != sx.rank or (ss is not None and ss.rank != sx.rank) or sx.rank == 0:  # 4.
            return Skip("index, src and the tensor written into have different ranks (or none)")
        dim = so.dim_of(op.dim, sx.rank)
        n, k = sx.shape[dim], si.shape[dim]
        if any(si.shape[d] > sx.shape[d] for d in range(sx.rank) if d != dim) or (
            ss is not None and any(si.shape[d] > ss.shape[d] for d in range(sx.rank))
        ):  # 5.
            return Skip("the index is larger than the source or the tensor written into")
        x_finite = known_finite(op.x, ctx)
        if tensor_src:
            v_finite = known_finite(op.src, ctx)
        else:
            v = torch.tensor(op.src, dtype=sx.dtype)
            v_finite = not bool(so.is_negzero(v)) if sx.dtype.is_floating_point else True
        core: ConstCore | NodeCore
        if ctx.is_const(op.index):
            iv = ctx.value(op.index).to(torch.int64)
            if bool(((iv < 0) | (iv >= n)).any()):  # 6.
                return Skip(f"constant index out of range for a dimension of size {n}")
            core_shape = tuple(
                1 if d != dim and bool((iv == iv.narrow(d, 0, 1)).all()) else s
                for d, s in enumerate(si.shape)
            )
            core = ConstCore(iv[tuple(slice(0, c) for c in core_shape)], core_shape)
        else:
            core_node, core_shape = broadcast_core(op.index, ctx)
            core_spec = ctx.spec(core_node)
            assert core_spec is not None
            core = NodeCore(core_node, core_shape, core_spec.shape, core_spec.dtype)
        bdims = tuple(d for d in range(sx.rank) if d != dim and core_shape[d] > 1)
        rdims = tuple(d for d in range(sx.rank) if d != dim and core_shape[d] == 1)
        bsz = math.prod(si.shape[d] for d in bdims)
        rsz = math.prod(si.shape[d] for d in rdims)
        shape = f"{bsz} x [{k} writers -> {n}] x {rsz}"
        mask = 0 if isinstance(core, ConstCore) else bsz * k * n
        if not op.accumulate:
            macs = 0 if not tensor_src else bsz * n * k * rsz
            macs += 0 if v_finite or not tensor_src else macs // 8
            kind = "ReduceMax + one-hot matmul" if tensor_src else "ReduceMax + Where"
            detail = f"last writer wins: {kind}, {shape}"
        else:
            detail, macs = sum_cost(sx.dtype, k, shape, bsz * n * k * rsz, v_finite)
        return ScatterPlan(detail=detail, macs=macs, mask_elems=mask, op=op, dim=dim, n=n, k=k,
                           x_shape=sx.shape, idx_shape=si.shape,
                           src_shape=ss.shape if ss is not None else None, dtype=sx.dtype,
                           x_finite=x_finite, v_finite=v_finite, core=core, bdims=bdims,
                           rdims=rdims, bsz=bsz, rsz=rsz)

    def replace(self, plan: ScatterPlan, b: Builder) -> fx.Node:
        op, dim, n, k, xs, ish = plan.op, plan.dim, plan.n, plan.k, plan.x_shape, plan.idx_shape
        bsz, rsz = plan.bsz, plan.rsz
        rank = len(xs)
        region = tuple(n if i == dim else ish[i] for i in range(rank))
        order = [*plan.bdims, dim, *plan.rdims]
        identity = order == list(range(rank))

        def to3(t: Tensor, mid: int) -> Tensor:
            t = t if identity else t.permute(*order)
            return t.reshape(bsz, mid, rsz)

        x = b.proxy(op.x)
        x3 = to3(so.cut(x, xs, region), n)
        if isinstance(op.src, fx.Node):
            assert plan.src_shape is not None
            v3 = to3(so.cut(b.proxy(op.src), plan.src_shape, ish), k)
        else:
            value = torch.tensor(op.src, dtype=plan.dtype)
            v3 = b.const(value.reshape(1, 1, 1) if not op.accumulate
                         else value.expand(bsz, k, rsz).clone(), "scatter_value")
        # the index's core, [B, K] (or [K])
        c = plan.core
        core_k = tuple(k if i == dim else s for i, s in enumerate(c.shape))
        if isinstance(c, ConstCore):
            core = c.value.expand(core_k)
        else:
            core = b.proxy(c.node)
            if tuple(c.shape) != tuple(c.own_shape):
                core = core.reshape(c.shape)
            if tuple(core_k) != tuple(c.shape):
                core = core.expand(core_k)
            if c.dtype != torch.int64:
                core = core.to(torch.int64)
        core = core if identity else core.permute(*order)
        core = core.reshape(bsz, k) if bsz > 1 else core.reshape(k)
        r = so.Rows(pre=bsz, n=n, post=rsz, k=k, batched=bsz > 1, dtype=plan.dtype,
                    x_finite=plan.x_finite, v_finite=plan.v_finite)
        if op.accumulate:
            y3 = so.rows_accumulate(b, x3, v3, core, r, name="scatter_add", rank=rank, dim=dim,
                                    include_self=op.include_self)
        else:
            y3 = so.rows_assign(b, x3, v3, core, r, broadcast_value=not isinstance(op.src, fx.Node))
        y = y3.reshape([ish[i] for i in plan.bdims] + [n] + [ish[i] for i in plan.rdims])
        if not identity:
            y = y.permute(*[order.index(i) for i in range(rank)])
        out = node_of(so.paste(x, y, xs, region))
        so.redirect_later_uses(op, b.anchor, out)
        return out
