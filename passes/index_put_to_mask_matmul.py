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
from dataclasses import dataclass

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import Tensor
from fxlower.kernels import gather as kernels
from fxlower.kernels import scatter as so
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import ScatterCall, known_finite, sum_cost

_MASK = (torch.bool, torch.uint8)


@dataclass(frozen=True, kw_only=True)
class IndexPutPlan(Plan):
    """What both forms read: the op (x, the values, accumulate, alpha) and the dtypes."""

    op: so.ScatterOp
    dtype: torch.dtype  # x's (and the values')
    x_finite: bool  # x holds no NaN/inf/-0.0 (or is not a float)
    v_finite: bool  # nor do the values


@dataclass(frozen=True, kw_only=True)
class MaskPlan(IndexPutPlan):
    """A boolean mask index with one value: out = where(mask, v, x) (or x + v)."""

    mask: fx.Node  # the index
    mask_dtype: torch.dtype  # bool, or uint8 (cast to bool)
    at: int  # the first dim it indexes
    shape: tuple[int, ...]  # its shape: x's dims at, at + 1, ...
    rank: int  # x's


@dataclass(frozen=True)
class Index:
    """One run-time index tensor, the term wrap(idx) * stride of L."""

    node: fx.Node
    size: int  # of the dim it indexes (negative indices wrap by it)
    dtype: torch.dtype  # cast to int64 when another int type


@dataclass(frozen=True)
class RuntimeIndices:
    """The index tensors L is computed from at run time."""

    indices: tuple[Index, ...]  # one per indexed dim, in order
    flat: bool  # index_add / index_copy / index_fill: a vector index (reshaped to [K])
    shape_s: tuple[int, ...]  # S, the shape they broadcast to


@dataclass(frozen=True, kw_only=True)
class RowsPlan(IndexPutPlan):
    """x viewed as [pre, N, post], the values as [pre, K, post], L[k] in [0, N)."""

    x_shape: tuple[int, ...]
    pos: tuple[int, ...]  # the indexed dims
    others: tuple[int, ...]  # the dims not indexed
    adjacent: bool  # the indexed dims are consecutive (else moved first)
    n: int  # N, positions in the flattened indexed dims
    k: int  # K, writers: numel(S)
    pre: int
    post: int
    lin: torch.Tensor | RuntimeIndices  # L: int64 [K] for constant indices
    result: tuple[int, ...]  # the indexing result's shape, the values broadcast to it
    aligned: tuple[int, ...]  # the values' shape, aligned to result's rank
    s_dims: tuple[int, ...]  # the dims of result that are S
    broadcast_value: bool  # the values are constant along S: one row for every writer


class IndexPutToMaskMatmul(RewritePass[ScatterCall, IndexPutPlan]):
    name = "index_put_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> ScatterCall | None:
        op = so.scatter_op(node)
        return ScatterCall(node, op) if op is not None and op.kind == "index_put" else None

    def check(self, m: ScatterCall, ctx: Context) -> IndexPutPlan | Skip:
        problem_t = so.target_problem(ctx.options.target, so.MASK_OPS, int64_indices=True)
        if problem_t is not None:  # target legality
            return Skip(problem_t)
        op = m.op
        sx = ctx.spec(op.x)
        tensor_v = isinstance(op.src, fx.Node)
        sv = ctx.spec(op.src) if tensor_v else None
        if sx is None or (tensor_v and sv is None):  # 1.
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        if not tensor_v and not isinstance(op.src, (int, float, bool)):
            return Skip("the written value is neither a tensor nor a number")
        indices = so.index_list(op, sx.rank)
        pos = [p for p, t in enumerate(indices) if t is not None]
        maybe_specs = [ctx.spec(indices[p]) for p in pos]
        specs = [s for s in maybe_specs if s is not None]
        if not pos or len(specs) != len(maybe_specs):  # 1.
            return Skip("index shapes unknown: pass example_inputs")
        vshape = tuple(sv.shape) if sv is not None else ()
        vnumel = math.prod(vshape)
        if any(s.dtype in _MASK for s in specs):  # 2.
            if len(pos) != 1:
                return Skip("a boolean mask index combined with other indices")
            if vnumel != 1:
                return Skip(f"a boolean mask index with a value of {vnumel} elements: where "
                            "each element lands depends on the number of True entries")
        if op.name == "index_add" and op.alpha != 1:  # 3.
            if sx.dtype.is_floating_point or not isinstance(op.alpha, int) or isinstance(
                op.alpha, bool
            ):
                return Skip(f"alpha={op.alpha!r}: PyTorch fuses the multiply into the addition "
                            "(one rounding), which separate ops do not reproduce bit-exactly")
        problem = so.inplace_problem(m.node, op)
        if problem:  # 4.
            return Skip(problem)
        if sv is not None and sv.dtype != sx.dtype:  # 5.
            return Skip(f"the values have dtype {sv.dtype}, the tensor written into {sx.dtype}")
        x_finite = known_finite(op.x, ctx)
        if tensor_v:
            v_finite = known_finite(op.src, ctx)
        else:
            v = torch.tensor(op.src, dtype=sx.dtype)
            v_finite = not bool(so.is_negzero(v)) if sx.dtype.is_floating_point else True
        if specs[0].dtype in _MASK:
            p, ms = pos[0], specs[0].shape
            if tuple(sx.shape[p:p + len(ms)]) != tuple(ms):
                return Skip(f"the mask's shape {tuple(ms)} does not match the indexed dims")
            verb = "x + value" if op.accumulate else "the value"
            return MaskPlan(detail=f"boolean mask index with one value: Where({verb})", op=op,
                            dtype=sx.dtype, x_finite=x_finite, v_finite=v_finite,
                            mask=indices[p], mask_dtype=specs[0].dtype, at=p,
                            shape=tuple(ms), rank=sx.rank)

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
        try:  # 5.
            if tuple(torch.broadcast_shapes(  # type: ignore[no-untyped-call]
                    vshape, result)) != tuple(result):
                raise RuntimeError
        except RuntimeError:
            return Skip(f"the values' shape {vshape} does not broadcast to the indexing "
                        f"result {tuple(result)}")
        aligned = (1,) * (len(result) - len(vshape)) + vshape
        s_dims = range(s_at, s_at + len(shape_s))
        broadcast_value = all(aligned[i] == 1 for i in s_dims)
        lin: torch.Tensor | RuntimeIndices
        if all(ctx.is_const(indices[p]) for p in pos):
            lin = torch.zeros(shape_s, dtype=torch.int64)
            stride = n
            for p, size in zip(pos, sizes, strict=True):
                iv = ctx.value(indices[p]).to(torch.int64)
                iv = iv.reshape(-1) if flat else iv
                if bool(((iv < -size) | (iv >= size)).any()):  # 6.
                    return Skip(f"constant index out of range for a dimension of size {size}")
                stride //= size
                lin = lin + torch.where(iv < 0, iv + size, iv) * stride
            lin = lin.reshape(-1)
        else:
            lin = RuntimeIndices(tuple(Index(indices[p], size, s.dtype)
                                       for p, size, s in zip(pos, sizes, specs, strict=True)),
                                 flat, shape_s)
        mask = 0 if isinstance(lin, torch.Tensor) else k * n
        where = f"[{k} writers -> {n} rows] x {pre} x {post}"
        if not op.accumulate:
            if broadcast_value:
                detail, macs = f"Where over the rows hit, one value for every writer, {where}", 0
            else:
                macs = pre * n * k * post
                macs += 0 if v_finite else macs // 8
                detail = f"last writer wins: ReduceMax + one-hot matmul, {where}"
        else:
            detail, macs = sum_cost(sx.dtype, k, where, pre * n * k * post, v_finite)
        return RowsPlan(detail=detail, macs=macs, mask_elems=mask, op=op, dtype=sx.dtype,
                        x_finite=x_finite, v_finite=v_finite, x_shape=sx.shape, pos=tuple(pos),
                        others=tuple(others), adjacent=adjacent, n=n, k=k, pre=pre, post=post,
                        lin=lin, result=result, aligned=aligned, s_dims=tuple(s_dims),
                        broadcast_value=broadcast_value)

    def replace(self, plan: IndexPutPlan, b: Builder) -> fx.Node:
        op = plan.op
        x = b.proxy(op.x)
        if isinstance(op.src, fx.Node):
            v = b.proxy(op.src)
        else:
            v = b.const(torch.tensor(op.src, dtype=plan.dtype), "index_put_value")
        if isinstance(plan, MaskPlan):
            out = node_of(self._mask(b, plan, x, v))
        else:
            assert isinstance(plan, RowsPlan)
            out = node_of(self._rows(b, plan, x, v))
        so.redirect_later_uses(op, b.anchor, out)
        return out

    @staticmethod
    def _mask(b: Builder, plan: MaskPlan, x: Tensor, v: Tensor) -> Tensor:
        p, ms, rank, dtype = plan.at, plan.shape, plan.rank, plan.dtype
        m = b.proxy(plan.mask)
        if plan.mask_dtype != torch.bool:
            m = m.to(torch.bool)
        if rank - p - len(ms):
            m = m.reshape(tuple(ms) + (1,) * (rank - p - len(ms)))
        v = v.reshape(())
        if not plan.op.accumulate:
            return so.select(m, v, x, dtype, signed=not plan.v_finite)
        if not dtype.is_floating_point:
            wdt = kernels.work_dtype(dtype)
            return torch.where(m, (x.to(wdt) + v.to(wdt)).to(dtype), x)
        acc_dt, step_round = so.accumulate_dtype("index_put", dtype, rank, p)
        return so.unrolled_sum(x, lambda j: m, lambda j: v, 1, dtype, acc_dt, step_round,
                               signed=not (plan.x_finite or plan.v_finite))

    @staticmethod
    def _lin(b: Builder, ri: RuntimeIndices, n: int) -> Tensor:
        """L[k] = sum over the indexed dims of wrap(idx[k]) * stride, flattened to [K]."""
        lin: Tensor | None = None
        stride = n
        for ix in ri.indices:
            i = b.proxy(ix.node)
            if ix.dtype != torch.int64:
                i = i.to(torch.int64)
            if ri.flat:
                i = i.reshape(-1)
            stride //= ix.size
            term = torch.where(i < 0, i + ix.size, i)
            term = term * stride if stride != 1 else term
            lin = term if lin is None else lin + term
        assert lin is not None  # at least one index
        return lin.expand(ri.shape_s).reshape(-1)

    @classmethod
    def _rows(cls, b: Builder, plan: RowsPlan, x: Tensor, v: Tensor) -> Tensor:
        op, pos, others = plan.op, list(plan.pos), list(plan.others)
        n, k, pre, post = plan.n, plan.k, plan.pre, plan.post
        rank = len(plan.x_shape)
        xp = x if plan.adjacent else x.permute(*pos, *others)
        x3 = xp.reshape(pre, n, post)
        lin = plan.lin if isinstance(plan.lin, torch.Tensor) else cls._lin(b, plan.lin, n)
        result, aligned = plan.result, plan.aligned
        if plan.broadcast_value:
            rest = [aligned[i] for i in range(len(result)) if i not in plan.s_dims]
            full = [result[i] for i in range(len(result)) if i not in plan.s_dims]
            vb = v.reshape(rest).expand(full)
            if op.accumulate:  # every writer adds the same row
                v3 = vb.reshape(pre, 1, post).expand(pre, k, post)
            else:
                v3 = vb.reshape(pre, 1, post)
        else:
            v3 = v.expand(result).reshape(pre, k, post)
        if op.name == "index_add" and op.alpha != 1:
            v3 = v3 * op.alpha
        r = so.Rows(pre=pre, n=n, post=post, k=k, batched=False, dtype=plan.dtype,
                    x_finite=plan.x_finite, v_finite=plan.v_finite)
        if op.accumulate:
            name = "index_add" if op.name == "index_add" else "index_put"
            y3 = so.rows_accumulate(b, x3, v3, lin, r, name=name, rank=rank, dim=pos[0])
        else:
            y3 = so.rows_assign(b, x3, v3, lin, r, broadcast_value=plan.broadcast_value)
        perm_shape = [plan.x_shape[p] for p in pos] + [plan.x_shape[i] for i in others]
        if plan.adjacent:
            return y3.reshape(plan.x_shape)
        order = pos + others
        return y3.reshape(perm_shape).permute(*[order.index(i) for i in range(rank)])
