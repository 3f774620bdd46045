"""index_put_to_mask_matmul: indexed writes become one-hot selections and sums.

Covers `x[idx] = v`, `x[:, idx] = v`, `x[i, j] = v` (torch.export's `aten.index_put`;
symbolic tracing cannot capture item assignment), `index_put` / `index_put_` (with
`accumulate`), `index_add` / `index_add_` (`alpha`), `index_copy` / `index_copy_`,
`index_fill` / `index_fill_`, and a boolean mask index with one value (`x[mask] = 0`). The
exporter makes ScatterND of them (plus NonZero for a mask).

Algebra: as for advanced indexing (index_to_mask_matmul), the index tensors broadcast to a
shape S (K = numel(S) writers) and give each writer a linear position L[k] in the flattened
indexed dims (N positions; negative indices wrap); x is viewed as [pre, N, post] and the
values, broadcast to the indexing result's shape, as [pre, K, post] (indexed dims moved
first when they are not adjacent). index_add / index_copy / index_fill along `dim` are
index_put with [None] * dim + [index].
- assignment (last writer wins):
      last[n] = max_k where(L[k] == n, k, -1)                      (ReduceMax, no CumSum)
      out = where(last >= 0, onehot(last)[N, K] @ v[pre, K, post], x)   (kernels.take_rows)
  values broadcast along the index (index_fill, `x[idx] = 0`, `x[:, idx] = row`) need no
  selection: out = where(last >= 0, v, x);
- accumulate (index_add, accumulate=True): out = x + the sum of v[:, k, :] over L[k] == n;
- mask index with one value: out = where(mask, v, x) (accumulate: where(mask, x + v, x)).

Legality (each a skip reason):
1. static shapes of x, the indices and the values are known (pass example_inputs);
2. a boolean mask index is the only index and comes with a single value (otherwise where
   each value lands depends on the number of True entries);
3. index_add's alpha is 1 on a float tensor (PyTorch fuses the multiply into the addition,
   one rounding, which separate ops cannot reproduce bit-exactly), an integer on an integer
   tensor;
4. an in-place `index_put_` / `index_add_` / `index_copy_` / `index_fill_` writes into a
   tensor made inside forward (a clone, zeros, arithmetic) of which no view was taken before;
5. the values have x's dtype and broadcast to the indexing result (PyTorch raises otherwise);
6. a constant index is in range (PyTorch raises otherwise).

Duplicates and numerics (scatter_ops.py): assignment keeps the value of the LAST writer in
the flattened index order, which is PyTorch's CPU result while its kernel runs serially (it
splits large tensors over threads; PyTorch documents the result as undefined); bit-exact for
every dtype and value (non-finite class codes, integers in their own dtype, -0.0 restored).
Sums: integers exact in their own dtype (bool: OR); floats added in index order from x, as
PyTorch's CPU kernels do, bit-exact while K <= 64 (float16/bfloat16 rounded as PyTorch
does: after every addition for index_put and for index_add of a vector or along a middle
dim, once after a float32 sum for index_add along the first or last dim); with K > 64 a
one-hot matmul sums in another order: within float rounding, not bit-exact (the report says
so). Out-of-range run-time indices write nothing where PyTorch raises.

Cost: assignment K*N compares + pre*N*K*post MACs (+1/8 for the code path of float values),
mask K*N; broadcast values: K*N compares only; sums pre*N*K*post adds (unrolled) or MACs.

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
from fxlower.kernels import gather as kernels
from fxlower.kernels import scatter as so
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import known_finite, sum_plan

_MASK = (torch.bool, torch.uint8)


class IndexPutToMaskMatmul(RewritePass):
    name = "index_put_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> bool:
        op = so.scatter_op(node)
        return op is not None and op.kind == "index_put"

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        problem_t = so.target_problem(ctx.options.target, so.MASK_OPS, int64_indices=True)
        if problem_t is not None:
            return Skip(problem_t)
        op = so.scatter_op(node)
        assert op is not None
        sx = ctx.spec(op.x)
        tensor_v = isinstance(op.src, fx.Node)
        sv = ctx.spec(op.src) if tensor_v else None
        if sx is None or (tensor_v and sv is None):
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        if not tensor_v and not isinstance(op.src, (int, float, bool)):
            return Skip("the written value is neither a tensor nor a number")
        indices = so.index_list(op, sx.rank)
        pos = [p for p, t in enumerate(indices) if t is not None]
        maybe_specs = [ctx.spec(indices[p]) for p in pos]
        specs = [s for s in maybe_specs if s is not None]
        if not pos or len(specs) != len(maybe_specs):
            return Skip("index shapes unknown: pass example_inputs")
        vshape = tuple(sv.shape) if sv is not None else ()
        vnumel = math.prod(vshape)
        if any(s.dtype in _MASK for s in specs):
            if len(pos) != 1:
                return Skip("a boolean mask index combined with other indices")
            if vnumel != 1:
                return Skip(f"a boolean mask index with a value of {vnumel} elements: where "
                            "each element lands depends on the number of True entries")
        if op.name == "index_add" and op.alpha != 1:
            if sx.dtype.is_floating_point or not isinstance(op.alpha, int) or isinstance(
                op.alpha, bool
            ):
                return Skip(f"alpha={op.alpha!r}: PyTorch fuses the multiply into the addition "
                            "(one rounding), which separate ops do not reproduce bit-exactly")
        problem = so.inplace_problem(node, op)
        if problem:
            return Skip(problem)
        if sv is not None and sv.dtype != sx.dtype:
            return Skip(f"the values have dtype {sv.dtype}, the tensor written into {sx.dtype}")
        data: dict[str, Any] = {"op": op, "pos": pos, "dtype": sx.dtype, "x_shape": sx.shape,
                                "rank": sx.rank, "x_finite": known_finite(op.x, ctx),
                                "idx_dtypes": [s.dtype for s in specs]}
        if tensor_v:
            data["v_finite"] = known_finite(op.src, ctx)
        else:
            v = torch.tensor(op.src, dtype=sx.dtype)
            data["v_finite"] = not bool(so.is_negzero(v)) if sx.dtype.is_floating_point else True
        if specs[0].dtype in _MASK:
            p, ms = pos[0], specs[0].shape
            if tuple(sx.shape[p:p + len(ms)]) != tuple(ms):
                return Skip(f"the mask's shape {tuple(ms)} does not match the indexed dims")
            data.update(mask=True, mask_pos=p, mask_shape=tuple(ms))
            verb = "x + value" if op.accumulate else "the value"
            return Plan(detail=f"boolean mask index with one value: Where({verb})", data=data)

        flat = op.indices is None  # index_add / index_copy / index_fill: a vector index
        shapes = [(math.prod(s.shape),) if flat else s.shape for s in specs]
        try:
            shape_s = tuple(torch.broadcast_shapes(*shapes))  # type: ignore[no-untyped-call]
        except RuntimeError:
            return Skip("the index tensors do not broadcast together")
        sizes = [sx.shape[p] for p in pos]
        n, k = math.prod(sizes), math.prod(shape_s)
        adjacent = pos == list(range(pos[0], pos[-1] + 1))
        others = [d for d in range(sx.rank) if d not in pos]
        if adjacent:
            pre = math.prod(sx.shape[: pos[0]])
            post = math.prod(sx.shape[pos[-1] + 1:])
            result = sx.shape[: pos[0]] + shape_s + sx.shape[pos[-1] + 1:]
            s_at = pos[0]
        else:
            pre, post = 1, math.prod(sx.shape[d] for d in others)
            result = shape_s + tuple(sx.shape[d] for d in others)
            s_at = 0
        try:
            if tuple(torch.broadcast_shapes(  # type: ignore[no-untyped-call]
                    vshape, result)) != tuple(result):
                raise RuntimeError
        except RuntimeError:
            return Skip(f"the values' shape {vshape} does not broadcast to the indexing "
                        f"result {tuple(result)}")
        aligned = (1,) * (len(result) - len(vshape)) + vshape
        s_dims = range(s_at, s_at + len(shape_s))
        broadcast_value = all(aligned[i] == 1 for i in s_dims)
        data.update(flat=flat, sizes=sizes, n=n, k=k, pre=pre, post=post, adjacent=adjacent,
                    others=others, result=result, aligned=aligned, s_dims=list(s_dims),
                    broadcast_value=broadcast_value, shape_s=shape_s)
        if all(ctx.is_const(indices[p]) for p in pos):
            lin = torch.zeros(shape_s, dtype=torch.int64)
            stride = n
            for p, size in zip(pos, sizes, strict=True):
                v = ctx.value(indices[p]).to(torch.int64)
                v = v.reshape(-1) if flat else v
                if bool(((v < -size) | (v >= size)).any()):
                    return Skip(f"constant index out of range for a dimension of size {size}")
                stride //= size
                lin = lin + torch.where(v < 0, v + size, v) * stride
            data["lin"] = lin.reshape(-1)
        mask = 0 if "lin" in data else k * n
        where = f"[{k} writers -> {n} rows] x {pre} x {post}"
        if not op.accumulate:
            if broadcast_value:
                return Plan(detail=f"Where over the rows hit, one value for every writer, {where}",
                            mask_elems=mask, data=data)
            macs = pre * n * k * post
            macs += 0 if data["v_finite"] else macs // 8
            return Plan(detail=f"last writer wins: ReduceMax + one-hot matmul, {where}",
                        macs=macs, mask_elems=mask, data=data)
        return sum_plan(sx.dtype, k, where, pre * n * k * post, mask,
                           data["v_finite"], data)

    def replace(self, node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
        d = plan.data
        op: so.ScatterOp = d["op"]
        dtype = d["dtype"]
        x = b.proxy(op.x)
        if isinstance(op.src, fx.Node):
            v = b.proxy(op.src)
        else:
            v = b.const(torch.tensor(op.src, dtype=dtype), "index_put_value")
        if d.get("mask"):
            out = node_of(self._mask(b, op, x, v, d))
        else:
            out = node_of(self._rows(b, op, x, v, d))
        so.redirect_later_uses(op, node, out)
        return out

    @staticmethod
    def _mask(b: Builder, op: so.ScatterOp, x: Tensor, v: Tensor, d: dict[str, Any]) -> Tensor:
        p, ms, rank = d["mask_pos"], d["mask_shape"], d["rank"]
        m = b.proxy(so.index_list(op, rank)[p])
        if d["idx_dtypes"][0] != torch.bool:
            m = m.to(torch.bool)
        if rank - p - len(ms):
            m = m.reshape(tuple(ms) + (1,) * (rank - p - len(ms)))
        v = v.reshape(())
        dtype = d["dtype"]
        if not op.accumulate:
            return so.select(m, v, x, dtype, signed=not d["v_finite"])
        if not dtype.is_floating_point:
            wdt = kernels.work_dtype(dtype)
            return torch.where(m, (x.to(wdt) + v.to(wdt)).to(dtype), x)
        acc_dt, step_round = so.accumulate_dtype("index_put", dtype, rank, p)
        return so.unrolled_sum(x, lambda j: m, lambda j: v, 1, dtype, acc_dt, step_round,
                               signed=not (d["x_finite"] or d["v_finite"]))

    @staticmethod
    def _rows(b: Builder, op: so.ScatterOp, x: Tensor, v: Tensor, d: dict[str, Any]) -> Tensor:
        pos, sizes, n, k, pre, post = d["pos"], d["sizes"], d["n"], d["k"], d["pre"], d["post"]
        rank, dtype = d["rank"], d["dtype"]
        xp = x if d["adjacent"] else x.permute(*pos, *d["others"])
        x3 = xp.reshape(pre, n, post)
        if "lin" in d:
            lin = d["lin"]
        else:
            indices = so.index_list(op, rank)
            lin = None
            stride = n
            for p, size, idt in zip(pos, sizes, d["idx_dtypes"], strict=True):
                i = b.proxy(indices[p])
                if idt != torch.int64:
                    i = i.to(torch.int64)
                if d["flat"]:
                    i = i.reshape(-1)
                stride //= size
                term = torch.where(i < 0, i + size, i)
                term = term * stride if stride != 1 else term
                lin = term if lin is None else lin + term
            lin = lin.expand(d["shape_s"]).reshape(-1)
        result, aligned = d["result"], d["aligned"]
        if d["broadcast_value"]:
            rest = [aligned[i] for i in range(len(result)) if i not in d["s_dims"]]
            full = [result[i] for i in range(len(result)) if i not in d["s_dims"]]
            vb = v.reshape(rest).expand(full)
            if op.accumulate:  # every writer adds the same row
                v3 = vb.reshape(pre, 1, post).expand(pre, k, post)
            else:
                v3 = vb.reshape(pre, 1, post)
        else:
            v3 = v.expand(result).reshape(pre, k, post)
        if op.name == "index_add" and op.alpha != 1:
            v3 = v3 * op.alpha
        r = so.Rows(pre=pre, n=n, post=post, k=k, batched=False, dtype=dtype,
                    x_finite=d["x_finite"], v_finite=d["v_finite"])
        if op.accumulate:
            name = "index_add" if op.name == "index_add" else "index_put"
            y3 = so.rows_accumulate(b, x3, v3, lin, r, name=name, rank=rank, dim=pos[0])
        else:
            y3 = so.rows_assign(b, x3, v3, lin, r, broadcast_value=d["broadcast_value"])
        perm_shape = [d["x_shape"][p] for p in pos] + [d["x_shape"][i] for i in d["others"]]
        if d["adjacent"]:
            return y3.reshape(d["x_shape"])
        order = pos + d["others"]
        return y3.reshape(perm_shape).permute(*[order.index(i) for i in range(rank)])
