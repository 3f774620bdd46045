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
from typing import Any

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import Tensor
from fxlower.kernels import scatter as so
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import broadcast_core, known_finite, sum_plan


class ScatterToMaskMatmul(RewritePass):
    name = "scatter_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> bool:
        op = so.scatter_op(node)
        return op is not None and op.kind == "scatter"

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        problem_t = so.target_problem(ctx.options.target, so.MASK_OPS, int64_indices=True)
        if problem_t is not None:
            return Skip(problem_t)
        op = so.scatter_op(node)
        assert op is not None
        tensor_src = isinstance(op.src, fx.Node)
        sx, si = ctx.spec(op.x), ctx.spec(op.index)
        ss = ctx.spec(op.src) if tensor_src else None
        if sx is None or si is None or (tensor_src and ss is None):
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        if op.reduce is not None:
            return Skip(f"reduce='{op.reduce}' is not lowered: only assignment and sums "
                        "(scatter_add, reduce='sum' or 'add') are")
        problem = so.inplace_problem(node, op)
        if problem:
            return Skip(problem)
        if ss is not None and ss.dtype != sx.dtype:
            return Skip(f"src has dtype {ss.dtype}, the tensor written into {sx.dtype}")
        if tensor_src is False and not isinstance(op.src, (int, float, bool)):
            return Skip("the scattered value is neither a tensor nor a number")
        if si.rank != sx.rank or (ss is not None and ss.rank != sx.rank) or sx.rank == 0:
            return Skip("index, src and the tensor written into have different ranks (or none)")
        dim = so.dim_of(op.dim, sx.rank)
        n, k = sx.shape[dim], si.shape[dim]
        if any(si.shape[d] > sx.shape[d] for d in range(sx.rank) if d != dim) or (
            ss is not None and any(si.shape[d] > ss.shape[d] for d in range(sx.rank))
        ):
            return Skip("the index is larger than the source or the tensor written into")
        data: dict[str, Any] = {"op": op, "dim": dim, "n": n, "k": k, "x_shape": sx.shape,
                      "idx_shape": si.shape, "src_shape": ss.shape if ss else None,
                      "dtype": sx.dtype, "x_finite": known_finite(op.x, ctx)}
        if tensor_src:
            data["v_finite"] = known_finite(op.src, ctx)
        else:
            v = torch.tensor(op.src, dtype=sx.dtype)
            data["v_finite"] = not bool(so.is_negzero(v)) if sx.dtype.is_floating_point else True
        if ctx.is_const(op.index):
            iv = ctx.value(op.index).to(torch.int64)
            if bool(((iv < 0) | (iv >= n)).any()):
                return Skip(f"constant index out of range for a dimension of size {n}")
            core_shape = tuple(
                1 if d != dim and bool((iv == iv.narrow(d, 0, 1)).all()) else s
                for d, s in enumerate(si.shape)
            )
            data["core_value"] = iv[tuple(slice(0, c) for c in core_shape)]
        else:
            core_node, core_shape = broadcast_core(op.index, ctx)
            data["core_node"] = core_node
            core_spec = ctx.spec(core_node)
            assert core_spec is not None
            data["core_own_shape"], data["core_dtype"] = core_spec.shape, core_spec.dtype
        data["core_shape"] = core_shape
        bdims = [d for d in range(sx.rank) if d != dim and core_shape[d] > 1]
        rdims = [d for d in range(sx.rank) if d != dim and core_shape[d] == 1]
        bsz = math.prod(si.shape[d] for d in bdims)
        rsz = math.prod(si.shape[d] for d in rdims)
        data.update(bdims=bdims, rdims=rdims, bsz=bsz, rsz=rsz)
        shape = f"{bsz} x [{k} writers -> {n}] x {rsz}"
        mask = 0 if "core_value" in data else bsz * k * n
        if not op.accumulate:
            macs = 0 if not tensor_src else bsz * n * k * rsz
            macs += 0 if data["v_finite"] or not tensor_src else macs // 8
            kind = "ReduceMax + one-hot matmul" if tensor_src else "ReduceMax + Where"
            return Plan(detail=f"last writer wins: {kind}, {shape}", macs=macs,
                        mask_elems=mask, data=data)
        return sum_plan(sx.dtype, k, shape, bsz * n * k * rsz, mask,
                           data["v_finite"], data)

    def replace(self, node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
        d = plan.data
        op: so.ScatterOp = d["op"]
        dim, n, k, xs, ish = d["dim"], d["n"], d["k"], d["x_shape"], d["idx_shape"]
        bdims, rdims, bsz, rsz = d["bdims"], d["rdims"], d["bsz"], d["rsz"]
        rank = len(xs)
        region = tuple(n if i == dim else ish[i] for i in range(rank))
        order = bdims + [dim] + rdims
        identity = order == list(range(rank))

        def to3(t: Tensor, mid: int) -> Tensor:
            t = t if identity else t.permute(*order)
            return t.reshape(bsz, mid, rsz)

        x = b.proxy(op.x)
        x3 = to3(so.cut(x, xs, region), n)
        if isinstance(op.src, fx.Node):
            v3 = to3(so.cut(b.proxy(op.src), d["src_shape"], ish), k)
        else:
            value = torch.tensor(op.src, dtype=d["dtype"])
            v3 = b.const(value.reshape(1, 1, 1) if not op.accumulate
                         else value.expand(bsz, k, rsz).clone(), "scatter_value")
        # the index's core, [B, K] (or [K])
        core_k = tuple(k if i == dim else c for i, c in enumerate(d["core_shape"]))
        if "core_value" in d:
            core = d["core_value"].expand(core_k)
        else:
            core = b.proxy(d["core_node"])
            if tuple(d["core_shape"]) != tuple(d["core_own_shape"]):
                core = core.reshape(d["core_shape"])
            if tuple(core_k) != tuple(d["core_shape"]):
                core = core.expand(core_k)
            if d["core_dtype"] != torch.int64:
                core = core.to(torch.int64)
        core = core if identity else core.permute(*order)
        core = core.reshape(bsz, k) if bsz > 1 else core.reshape(k)
        r = so.Rows(pre=bsz, n=n, post=rsz, k=k, batched=bsz > 1, dtype=d["dtype"],
                    x_finite=d["x_finite"], v_finite=d["v_finite"])
        if op.accumulate:
            y3 = so.rows_accumulate(b, x3, v3, core, r, name="scatter_add", rank=rank, dim=dim,
                                    include_self=op.include_self)
        else:
            y3 = so.rows_assign(b, x3, v3, core, r, broadcast_value=not isinstance(op.src, fx.Node))
        y = y3.reshape([ish[i] for i in bdims] + [n] + [ish[i] for i in rdims])
        if not identity:
            y = y.permute(*[order.index(i) for i in range(rank)])
        out = node_of(so.paste(x, y, xs, region))
        so.redirect_later_uses(op, node, out)
        return out
