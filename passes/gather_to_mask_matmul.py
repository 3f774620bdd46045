"""gather_to_mask_matmul: `torch.gather` becomes a mask product or a masked sum.

Covers `torch.gather`, `Tensor.gather`, `take_along_dim` and `aten.gather.default` (all
normalised to `aten.gather.default(x, dim, idx)`).

Algebra: out[..., k, ...] = x[..., idx[..., k, ...], ...] along `dim` (size N in x, K in
idx). Other dims split in two:
- *broadcast* dims, along which the index is constant: found by following the index back
  through `expand` / `repeat` / `broadcast_to` (the MAE `ids.unsqueeze(-1).repeat(1, 1, D)`
  pattern), or, for a constant index, from its values;
- *batch* dims, along which it varies.
With broadcast dims, x is viewed as [B, N, R] (batch, dim, broadcast) and
    out = onehot(idx_core)[B, K, N] @ x[B, N, R]            (kernels.take_rows)
a batched matmul with a K x N mask per batch row, never a mask of the index's full size.
Without broadcast dims every element has its own index:
    out = sum_n where(idx[..., None] == n, x[..., n], 0)     (kernels.gather_elements)
whose temporaries have numel(idx) * N elements: memory grows with N (reported).

Legality (each a skip reason):
1. static shapes of x and idx are known (pass example_inputs);
2. a constant index is in range (torch raises otherwise); a 0-d gather (whose only valid
   index is 0) becomes a copy of the source;
3. the target allows the ops of one exact formulation (`kernels.choose`).

Formulations for an index known when lowering: one shared row set along `dim` becomes
Slice + Concat (<= 16 runs) or a precomputed one-hot; otherwise the mask is precomputed as a
constant. Nothing index-dependent runs at run time.

Numerics: exact for every dtype and value, as in kernels/gather.py (non-finite class codes for
float sources that may hold NaN/inf/-0.0; integers in their own dtype). Out-of-range
run-time indices give zeros where torch would raise.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import gather as kernels
from fxlower.normalise import GATHER
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import FOLDED, MAX_RUNS, broadcast_core, fold_lookup, known_finite, replace_folded


class GatherToMaskMatmul(RewritePass):
    name = "gather_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> bool:
        return node.op == "call_function" and node.target is GATHER

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        x, dim_arg, idx = node.args[:3]
        sx, si = ctx.spec(x), ctx.spec(idx)
        if sx is None or si is None or not isinstance(idx, fx.Node):  # (no spec: not a node)
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        rank = sx.rank
        if rank == 0:  # 0-d source and index: the only valid index is 0
            return Plan(detail="0-d source: the only valid index is 0, the result is the source",
                        data={"zero_d": True})
        dim = int(cast(int, dim_arg)) % max(rank, 1)  # aten.gather's dim is an int
        n, k = sx.shape[dim], si.shape[dim]
        if si.numel == 0:
            return Plan(detail="empty result: an empty slice", data={"empty": si.shape})
        data: dict[str, Any] = {"dim": dim, "n": n, "k": k, "x_shape": sx.shape, "idx_shape": si.shape,
                "dtype": sx.dtype, "known_finite": known_finite(x, ctx)}
        const = ctx.is_const(idx)
        if const:
            v = ctx.value(idx).to(torch.int64)
            if bool(((v < 0) | (v >= n)).any()):
                return Skip(f"constant index out of range for a dimension of size {n}")
            core_shape = tuple(
                1 if d != dim and bool((v == v.narrow(d, 0, 1)).all()) else s
                for d, s in enumerate(si.shape)
            )
            core = v[tuple(slice(0, c) for c in core_shape)]
            data["core_value"] = core
        else:
            core_node, core_shape = broadcast_core(idx, ctx)
            own = ctx.spec(core_node)
            assert own is not None  # broadcast_core returns a node with a spec
            data["core_node"] = core_node
            data["core_own_shape"] = own.shape
        data["core_shape"] = core_shape
        bdims = [d for d in range(rank) if d != dim and core_shape[d] > 1]
        rdims = [d for d in range(rank) if d != dim and core_shape[d] == 1]
        rsize = math.prod(si.shape[d] for d in rdims)
        data["bdims"], data["rdims"] = bdims, rdims
        bsize = math.prod(si.shape[d] for d in bdims)
        if const and not bdims:
            rows = data["core_value"].reshape(-1).tolist()
            pieces = kernels.runs(rows)
            if len(pieces) <= MAX_RUNS:
                data["pieces"] = pieces
                return Plan(detail=f"constant index: {len(pieces)} slice(s) along dim {dim}",
                            data=data)
        if const:
            folded = fold_lookup(node, ctx, (bsize * k * n) if rsize > 1 else si.numel * n)
            if folded is not None:
                return folded
        fm = kernels.choose(ctx.options.target, codes=not data["known_finite"], wrap=False,
                            elementwise=rsize <= 1, n=n)
        if isinstance(fm, str):
            return Skip(fm)
        data["fm"] = fm
        if rsize > 1:
            macs = bsize * k * n * rsize
            extra = 0 if data["known_finite"] else macs // 8
            kind = "constant one-hot" if const else "one-hot"
            return Plan(
                detail=f"{kind} batched matmul: {bsize} x [{k}x{n}] mask, index broadcast "
                f"over {rsize} elements",
                macs=macs + extra, mask_elems=0 if const else bsize * k * n, data=data,
            )
        elems = math.prod(si.shape) * n
        data["elementwise"] = True
        return Plan(
            detail=f"masked sum over {n} candidates per element (index varies along every "
            f"dim; memory grows with N)",
            macs=elems * (1 if data["known_finite"] else 2),
            mask_elems=0 if const else elems, data=data,
        )

    def replace(self, node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
        d = plan.data
        if FOLDED in d:
            return replace_folded(node, plan, b)
        if "empty" in d:
            return node_of(b.proxy(cast(fx.Node, node.args[0])).reshape(-1)[0:0].reshape(d["empty"]))
        if d.get("zero_d"):
            return node_of(torch.clone(b.proxy(cast(fx.Node, node.args[0]))))
        dim, xs, ish = d["dim"], d["x_shape"], d["idx_shape"]
        x = b.proxy(cast(fx.Node, node.args[0]))
        # torch.gather reads x only up to idx's extent along the other dims
        cut = tuple(slice(0, ish[i]) if i != dim and ish[i] < xs[i] else slice(None)
                    for i in range(len(xs)))
        if any(c != slice(None) for c in cut):
            x = x[cut]
        xshape = tuple(xs[i] if i == dim else ish[i] for i in range(len(xs)))
        if d.get("elementwise"):
            idx = d["core_value"] if "core_value" in d else b.proxy(cast(fx.Node, node.args[2]))
            if "core_value" in d:
                idx = idx.expand(ish) if tuple(idx.shape) != tuple(ish) else idx
            return node_of(kernels.gather_elements(
                b, x, dim, idx, x_shape=xshape, dtype=d["dtype"], known_finite=d["known_finite"],
                fm=d["fm"],
            ))
        bdims, rdims, n, k = d["bdims"], d["rdims"], d["n"], d["k"]
        order = bdims + [dim] + rdims
        if order != list(range(len(xs))):
            x = x.permute(*order)
        bsz = math.prod(ish[i] for i in bdims)
        rsz = math.prod(ish[i] for i in rdims)
        x3 = x.reshape(bsz, n, rsz)
        out_perm_shape = tuple(ish[i] for i in bdims) + (k,) + tuple(ish[i] for i in rdims)
        if "pieces" in d:
            y = kernels.slice_rows(x3, d["pieces"], n)
        else:
            if "core_value" in d:
                core = d["core_value"]
            else:
                core = b.proxy(d["core_node"])
                if tuple(d["core_shape"]) != tuple(d["core_own_shape"]):
                    core = core.reshape(d["core_shape"])
            core = core.permute(*order) if order != list(range(len(xs))) else core
            core = core.reshape(bsz, k) if bsz > 1 else core.reshape(k)
            y = kernels.take_rows(b, x3, core, pre=bsz, n=n, post=rsz, k=k, batched=bsz > 1,
                                  dtype=d["dtype"], known_finite=d["known_finite"], fm=d["fm"])
        y = y.reshape(out_perm_shape)
        if order != list(range(len(xs))):
            inv = [order.index(i) for i in range(len(xs))]
            y = y.permute(*inv)
        return node_of(y)

