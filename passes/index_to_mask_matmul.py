"""index_to_mask_matmul: advanced indexing becomes a one-hot matrix product.

Covers `x[idx]`, `x[:, idx]`, `x[i, j]` (several index tensors, broadcast together),
negative indices, `index_select`, `nn.Embedding` / `F.embedding` (any `padding_idx`),
`torch.take` and `aten.index.Tensor` (all normalised to `aten.index.Tensor(x, indices)`).

Algebra: let the indexed dims of x have sizes N_1..N_m and the index tensors broadcast to
shape S. With L = sum_j wrap(i_j) * stride_j the linear position in the flattened indexed
dims (N = prod N_j; wrap(i) = i + N_j for i < 0), and x viewed as [pre, N, post]:
    out[p, s, q] = sum_n onehot(L)[s, n] * x[p, n, q]      (kernels.take_rows)
then reshaped to PyTorch's result shape (index dims in place when the indexed dims are
adjacent, else first). Adjacent indexed dims need no transpose; with post == 1 the
transposed one-hot multiplies from the right, so x is never transposed.

Legality (each a skip reason):
1. static shapes of x and of every index are known (pass example_inputs);
2. no index is boolean / uint8 (a mask index has a data-dependent output shape);
3. a constant index is in range (torch raises otherwise; we refuse rather than guess);
4. the target allows the ops of one exact formulation (`kernels.choose`: compare mask,
   else arithmetic mask; the non-finite code path needs comparisons and Where).

Formulations:
- run-time index, target with Gather under conditions this lookup breaks (Kneron: a single
  index; TIDL: 1-D indices): the target's own Gather on 1-D pieces of the flattened index
  (Reshape, Slice, Gather, Concat), each piece as large as the conditions allow; bit-exact
  for every dtype and value, no mask. Only for one indexed dim, at most 512 pieces, and
  when negative indices cannot occur (nn.Embedding, F.embedding and index_select raise on
  them; normalise marks those) or the target can wrap them (Less, Add, Where).
- index known when lowering (buffer, constant, arange): no run-time mask. Runs of a
  constant step become Slice + Concat when there are at most 16 of them; else, when the
  source is known too (a relative-position table), the looked-up values are folded into
  one constant (`_common.fold_lookup`: eval mode only, never larger than the one-hot);
  else the one-hot matrix is precomputed as a constant.
- otherwise: Equal against a constant arange, Cast, MatMul; for targets without
  comparisons the arithmetic mask relu(1 - |L - n|) (Sub, Abs, Relu; negative indices
  wrapped with Relu arithmetic), exact while N <= 2**24.

Numerics: exact for every dtype and value (see kernels/gather.py): float sources that may hold
NaN/inf/-0.0 carry a packed class code (1/8 extra multiply-adds); parameters found finite
when lowering, integer sources and `assume_finite=True` skip it. Integers are reduced in
their own dtype. Out-of-range run-time indices give zeros where torch would raise.
Cost: pre*K*N*post multiply-adds (K = numel(S)); mask K*N elements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import gather as kernels
from fxlower.normalise import IN_RANGE, INDEX
from fxlower.rewrite import Context, Plan, RewritePass, Skip
from fxlower.targets import Facts

from ._common import (
    MAX_RUNS,
    EmptyPlan,
    Folded,
    finiteness,
    fold_lookup,
    replace_empty,
    replace_folded,
)


@dataclass(frozen=True)
class Index:
    """`aten.index.Tensor(x, indices)`, the one spelling normalising leaves."""

    node: fx.Node
    x: fx.node.Argument
    indices: tuple[fx.Node | None, ...]  # one per leading dim of x; None: not indexed


@dataclass(frozen=True, kw_only=True)
class _Rows(Plan):
    """x viewed as [pre, N, post], the indexed dims flattened to N (moved first unless
    adjacent), and the result's shape."""

    x: fx.Node
    pos: tuple[int, ...]  # the indexed dims
    others: tuple[int, ...]  # the other dims
    adjacent: bool  # the indexed dims are adjacent: no transpose
    pre: int
    n: int
    post: int
    out_shape: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class SlicePlan(_Rows):
    """A constant index of few runs: Slice + Concat."""

    pieces: tuple[tuple[int, int, int], ...]  # (start, stop, step) runs of the rows


@dataclass(frozen=True, kw_only=True)
class _OneHot(_Rows):
    """out = onehot(L)[K, N] @ x[pre, N, post] (kernels.take_rows)."""

    k: int  # rows looked up: numel of the broadcast index shape
    dtype: torch.dtype  # x's
    known_finite: bool  # x holds no NaN/inf/-0.0 (no class codes)
    fm: kernels.Formulation


@dataclass(frozen=True, kw_only=True)
class ConstOneHotPlan(_OneHot):
    """The linear positions known when lowering: a precomputed one-hot."""

    lin: torch.Tensor  # the linear positions L, flat, wrapped into [0, N)


@dataclass(frozen=True, kw_only=True)
class OneHotPlan(_OneHot):
    """The linear positions computed at run time from the index tensors."""

    indices: tuple[fx.Node, ...]  # the index tensors, one per indexed dim (`pos`)
    sizes: tuple[int, ...]  # the indexed dims' sizes
    index_dtypes: tuple[torch.dtype, ...]  # the index tensors' dtypes


@dataclass(frozen=True, kw_only=True)
class GatherPiecesPlan(Plan):
    """The target's own Gather, in pieces that meet its conditions (a run-time index)."""

    x: fx.Node
    dim: int  # the one indexed dim
    index: fx.Node
    size: int  # x's size along dim
    k: int  # indices looked up
    chunk: int  # indices per piece
    wrap: bool  # wrap negative indices first (the op allowed them)
    out_shape: tuple[int, ...]


IndexPlan = Folded | EmptyPlan | SlicePlan | ConstOneHotPlan | OneHotPlan | GatherPiecesPlan
MAX_PIECES = 512  # more single-index Gathers than this is no longer a sane graph


class IndexToMaskMatmul(RewritePass[Index, IndexPlan]):
    name = "index_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> Index | None:
        if node.op != "call_function" or node.target is not INDEX:
            return None
        x, indices = node.args
        return Index(node, x, tuple(cast("Sequence[fx.Node | None]", indices)))  # aten's list

    def check(self, m: Index, ctx: Context) -> IndexPlan | Skip:
        x, indices = m.x, m.indices
        sx = ctx.spec(x)
        if not isinstance(x, fx.Node) or sx is None:  # 1. (spec is None for a non-node)
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        pos = [p for p, t in enumerate(indices) if t is not None]
        maybe_specs = [ctx.spec(indices[p]) for p in pos]
        specs = [s for s in maybe_specs if s is not None]
        if len(specs) != len(maybe_specs):  # 1.
            return Skip("index shapes unknown: pass example_inputs")
        if any(s.dtype in (torch.bool, torch.uint8) for s in specs):  # 2.
            return Skip("boolean mask index: the output shape depends on the data")
        sizes = [sx.shape[p] for p in pos]
        shape_s = tuple(torch.broadcast_shapes(  # type: ignore[no-untyped-call]
            *[s.shape for s in specs]))
        n = math.prod(sizes)
        k = math.prod(shape_s)
        adjacent = pos == list(range(pos[0], pos[-1] + 1))
        others = [d for d in range(sx.rank) if d not in pos]
        if adjacent:
            pre = math.prod(sx.shape[: pos[0]])
            post = math.prod(sx.shape[pos[-1] + 1 :])
            out_shape = sx.shape[: pos[0]] + shape_s + sx.shape[pos[-1] + 1 :]
        else:
            pre, post = 1, math.prod(sx.shape[d] for d in others)
            out_shape = shape_s + tuple(sx.shape[d] for d in others)
        if math.prod(out_shape) == 0:
            return EmptyPlan(detail="empty result: an empty slice", x=x, shape=out_shape)
        finite, note = finiteness(x, ctx)
        where = f"{k} of {n} rows" + ("" if adjacent else " (indexed dims moved first)")
        index_nodes = tuple(cast(fx.Node, indices[p]) for p in pos)  # `pos` holds the nodes
        if all(ctx.is_const(i) for i in index_nodes):
            lin = self._linear(ctx, [ctx.value(i) for i in index_nodes], sizes, shape_s)
            if isinstance(lin, str):  # 3.
                return Skip(lin)
            pieces = kernels.runs(lin.tolist())
            if len(pieces) <= MAX_RUNS:
                return SlicePlan(detail=f"constant index: {len(pieces)} slice(s), {where}",
                                 x=x, pos=tuple(pos), others=tuple(others), adjacent=adjacent,
                                 pre=pre, n=n, post=post, out_shape=out_shape,
                                 pieces=tuple(pieces))
            folded = fold_lookup(m.node, ctx, k * n)
            if folded is not None:
                return folded
            macs = pre * k * n * post
            return ConstOneHotPlan(detail=f"constant index: precomputed one-hot matmul, {where}",
                                   macs=macs + (0 if finite else macs // 8),
                                   x=x, pos=tuple(pos), others=tuple(others), adjacent=adjacent,
                                   pre=pre, n=n, post=post, out_shape=out_shape, k=k,
                                   dtype=sx.dtype, known_finite=finite, fm=kernels.DEFAULT,
                                   lin=lin)
        native = self._gather_pieces(m, ctx, pos, k, out_shape)
        if native is not None:
            return native
        fm = kernels.choose(ctx.options.target, codes=not finite, wrap=True,
                            elementwise=False, n=n)
        if isinstance(fm, str):  # 4.
            return Skip(fm)
        macs = pre * k * n * post
        code = note
        code += "" if fm.mask == "compare" else " (arithmetic mask)"
        return OneHotPlan(detail=f"one-hot matmul{code}, {where}",
                          macs=macs + (0 if finite else macs // 8), mask_elems=k * n,
                          x=x, pos=tuple(pos), others=tuple(others), adjacent=adjacent,
                          pre=pre, n=n, post=post, out_shape=out_shape, k=k,
                          dtype=sx.dtype, known_finite=finite, fm=fm,
                          indices=index_nodes, sizes=tuple(sizes),
                          index_dtypes=tuple(s.dtype for s in specs))

    @staticmethod
    def _gather_pieces(m: Index, ctx: Context, pos: list[int], k: int,
                       out_shape: tuple[int, ...]) -> GatherPiecesPlan | None:
        """Formulation 0: a target that has Gather, but under conditions this lookup breaks
        (Kneron: a single index; TIDL: a 1-D indices tensor), gets its own Gather on 1-D
        pieces of the flattened index that meet them. None when that is not possible."""
        target = ctx.options.target
        if target is None or not target.allows("Gather") or len(pos) != 1:
            return None
        index = m.indices[pos[0]]
        assert index is not None and isinstance(m.x, fx.Node)
        wrap = not m.node.meta.get(IN_RANGE, False)  # x[idx] allows negative indices
        if wrap and not all(target.allows(op) for op in kernels.OPS["wrap:compare"]):
            return None
        data_const = ctx.is_const(m.x)
        sizes = sorted({k} | {int(c.value) for c in target.conditions.get("Gather", ())
                              if c.kind == "indices_max_elems" and 0 < int(c.value) < k},
                       reverse=True)
        for chunk in sizes:
            facts = Facts(indices_numel=chunk, indices_rank=1, indices_const=False,
                          data_const=data_const)
            if target.broken_condition("Gather", facts):
                continue
            count = -(-k // chunk)
            need = ("Reshape",) + (("Slice", "Concat") if count > 1 else ())
            if count > MAX_PIECES or not all(target.allows(op) for op in need):
                return None
            sx = ctx.spec(m.x)
            assert sx is not None
            return GatherPiecesPlan(
                detail=f"the target's own Gather in {count} piece(s) of at most {chunk} "
                       f"index(es), 1-D (meets its conditions; bit-exact)",
                x=m.x, dim=pos[0], index=index, size=sx.shape[pos[0]], k=k, chunk=chunk,
                wrap=wrap, out_shape=out_shape)
        return None

    @staticmethod
    def _linear(ctx: Context, values: list[torch.Tensor], sizes: list[int],
                shape_s: tuple[int, ...]) -> torch.Tensor | str:
        lin = torch.zeros(shape_s, dtype=torch.int64)
        stride = math.prod(sizes)
        for v, size in zip(values, sizes, strict=True):
            v = v.to(torch.int64)
            if bool(((v < -size) | (v >= size)).any()):
                return f"constant index out of range for a dimension of size {size}"
            stride //= size
            lin = lin + torch.where(v < 0, v + size, v) * stride
        return lin.reshape(-1)

    def replace(self, plan: IndexPlan, b: Builder) -> fx.Node:
        if isinstance(plan, Folded):
            return replace_folded(plan, b)
        if isinstance(plan, EmptyPlan):
            return replace_empty(plan, b)
        if isinstance(plan, GatherPiecesPlan):
            i = b.proxy(plan.index).reshape(-1)
            if plan.wrap:
                i = kernels.wrap_negative(i, plan.size)
            src = b.proxy(plan.x)
            parts = [torch.index_select(src, plan.dim, i[a: a + plan.chunk])
                     for a in range(0, plan.k, plan.chunk)]
            y = parts[0] if len(parts) == 1 else torch.cat(parts, plan.dim)
            return node_of(y.reshape(plan.out_shape))
        x = b.proxy(plan.x)
        if not plan.adjacent:
            x = x.permute(*plan.pos, *plan.others)
        x3 = x.reshape(plan.pre, plan.n, plan.post)
        if isinstance(plan, SlicePlan):
            y = kernels.slice_rows(x3, list(plan.pieces), plan.n)
            return node_of(y.reshape(plan.out_shape))
        if isinstance(plan, ConstOneHotPlan):
            lin = plan.lin
        else:
            fm = plan.fm
            run = None
            stride = plan.n
            for index, size in zip(plan.indices, plan.sizes, strict=True):
                i = b.proxy(index)
                stride //= size
                term = kernels.wrap_negative(i, size, fm)
                term = term * stride if stride != 1 else term
                run = term if run is None else run + term
            assert run is not None  # at least one index
            lin = run.reshape(-1)
            if fm.mask == "compare" and fm.index_dtype == torch.int64 and any(
                dt != torch.int64 for dt in plan.index_dtypes
            ):
                lin = lin.to(torch.int64)
        y = kernels.take_rows(
            b, x3, lin, pre=plan.pre, n=plan.n, post=plan.post, k=plan.k, batched=False,
            dtype=plan.dtype, known_finite=plan.known_finite, fm=plan.fm,
        )
        return node_of(y.reshape(plan.out_shape))
