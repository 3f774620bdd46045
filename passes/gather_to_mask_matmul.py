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
from dataclasses import dataclass
from typing import cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import gather as kernels
from fxlower.normalise import GATHER
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import (
    MAX_RUNS,
    EmptyPlan,
    Folded,
    broadcast_core,
    finiteness,
    fold_lookup,
    replace_empty,
    replace_folded,
)


@dataclass(frozen=True)
class Gather:
    """`aten.gather.default(x, dim, idx)`, the one spelling normalising leaves."""

    node: fx.Node
    x: fx.node.Argument
    dim: int
    idx: fx.node.Argument


@dataclass(frozen=True, kw_only=True)
class CopyPlan(Plan):
    """A 0-d gather: the only valid index is 0, the result is a copy of the source."""

    x: fx.Node


@dataclass(frozen=True, kw_only=True)
class _Read(Plan):
    """What every formulation of a non-empty gather reads."""

    x: fx.Node
    dim: int  # in [0, rank)
    x_shape: tuple[int, ...]
    idx_shape: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class ElementsPlan(_Read):
    """Every element has its own index: a masked sum over the N candidates
    (kernels.gather_elements)."""

    idx: torch.Tensor | fx.Node  # the index node, or a constant index's value cut to its core
    dtype: torch.dtype  # x's
    known_finite: bool  # x holds no NaN/inf/-0.0 (no class codes)
    fm: kernels.Formulation


@dataclass(frozen=True, kw_only=True)
class _Rows(_Read):
    """x viewed as [B, N, R]: batch dims, `dim`, broadcast dims."""

    bdims: tuple[int, ...]  # batch dims: the index varies along them
    rdims: tuple[int, ...]  # broadcast dims: the index is constant along them
    n: int  # x's size along dim
    k: int  # idx's size along dim


@dataclass(frozen=True, kw_only=True)
class SlicePlan(_Rows):
    """A constant index with no batch dims: one shared row set, as Slice + Concat."""

    pieces: tuple[tuple[int, int, int], ...]  # (start, stop, step) runs of the rows


@dataclass(frozen=True, kw_only=True)
class OneHotPlan(_Rows):
    """onehot(core)[B, K, N] @ x[B, N, R] (kernels.take_rows)."""

    core: torch.Tensor | fx.Node  # the index's broadcast core: its value, or the node it
    # was expanded from (`_common.broadcast_core`)
    align: tuple[int, ...] | None  # that node's shape aligned to idx's rank, when it differs
    dtype: torch.dtype  # x's
    known_finite: bool  # x holds no NaN/inf/-0.0 (no class codes)
    fm: kernels.Formulation


GatherPlan = Folded | CopyPlan | EmptyPlan | ElementsPlan | SlicePlan | OneHotPlan


class GatherToMaskMatmul(RewritePass[Gather, GatherPlan]):
    name = "gather_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> Gather | None:
        if node.op != "call_function" or node.target is not GATHER:
            return None
        x, dim, idx = node.args[:3]
        return Gather(node, x, cast(int, dim), idx)  # aten.gather's dim is an int

    def check(self, m: Gather, ctx: Context) -> GatherPlan | Skip:
        x, idx = m.x, m.idx
        sx, si = ctx.spec(x), ctx.spec(idx)
        if (sx is None or si is None or not isinstance(x, fx.Node)
                or not isinstance(idx, fx.Node)):  # 1. (no spec: not a node)
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        rank = sx.rank
        if rank == 0:  # 2. 0-d source and index: the only valid index is 0
            return CopyPlan(detail="0-d source: the only valid index is 0, the result is the "
                                   "source", x=x)
        dim = int(m.dim) % max(rank, 1)
        n, k = sx.shape[dim], si.shape[dim]
        if si.numel == 0:
            return EmptyPlan(detail="empty result: an empty slice", x=x, shape=si.shape)
        finite, note = finiteness(x, ctx)
        const = ctx.is_const(idx)
        core: torch.Tensor | fx.Node
        align: tuple[int, ...] | None = None
        if const:
            v = ctx.value(idx).to(torch.int64)
            if bool(((v < 0) | (v >= n)).any()):  # 2.
                return Skip(f"constant index out of range for a dimension of size {n}")
            core_shape = tuple(
                1 if d != dim and bool((v == v.narrow(d, 0, 1)).all()) else s
                for d, s in enumerate(si.shape)
            )
            core = v[tuple(slice(0, c) for c in core_shape)]
        else:
            core, core_shape = broadcast_core(idx, ctx)
            own = ctx.spec(core)
            assert own is not None  # broadcast_core returns a node with a spec
            if core_shape != own.shape:
                align = core_shape
        bdims = tuple(d for d in range(rank) if d != dim and core_shape[d] > 1)
        rdims = tuple(d for d in range(rank) if d != dim and core_shape[d] == 1)
        rsize = math.prod(si.shape[d] for d in rdims)
        bsize = math.prod(si.shape[d] for d in bdims)
        if isinstance(core, torch.Tensor) and not bdims:  # a constant index
            rows = core.reshape(-1).tolist()
            pieces = kernels.runs(rows)
            if len(pieces) <= MAX_RUNS:
                return SlicePlan(detail=f"constant index: {len(pieces)} slice(s) along dim {dim}",
                                 x=x, dim=dim, x_shape=sx.shape, idx_shape=si.shape,
                                 bdims=bdims, rdims=rdims, n=n, k=k, pieces=tuple(pieces))
        if const:
            folded = fold_lookup(m.node, ctx, (bsize * k * n) if rsize > 1 else si.numel * n)
            if folded is not None:
                return folded
        fm = kernels.choose(ctx.options.target, codes=not finite, wrap=False,
                            elementwise=rsize <= 1, n=n)
        if isinstance(fm, str):  # 3.
            return Skip(fm)
        if rsize > 1:
            macs = bsize * k * n * rsize
            extra = 0 if finite else macs // 8
            kind = "constant one-hot" if const else "one-hot"
            return OneHotPlan(
                detail=f"{kind} batched matmul: {bsize} x [{k}x{n}] mask, index broadcast "
                f"over {rsize} elements{note}",
                macs=macs + extra, mask_elems=0 if const else bsize * k * n,
                x=x, dim=dim, x_shape=sx.shape, idx_shape=si.shape, bdims=bdims, rdims=rdims,
                n=n, k=k, core=core, align=align, dtype=sx.dtype, known_finite=finite, fm=fm,
            )
        elems = math.prod(si.shape) * n
        return ElementsPlan(
            detail=f"masked sum over {n} candidates per element (index varies along every "
            f"dim; memory grows with N){note}",
            macs=elems * (1 if finite else 2),
            mask_elems=0 if const else elems,
            x=x, dim=dim, x_shape=sx.shape, idx_shape=si.shape,
            idx=core if isinstance(core, torch.Tensor) else idx, dtype=sx.dtype,
            known_finite=finite, fm=fm,
        )

    def replace(self, plan: GatherPlan, b: Builder) -> fx.Node:
        if isinstance(plan, Folded):
            return replace_folded(plan, b)
        if isinstance(plan, EmptyPlan):
            return replace_empty(plan, b)
        if isinstance(plan, CopyPlan):
            return node_of(torch.clone(b.proxy(plan.x)))
        dim, xs, ish = plan.dim, plan.x_shape, plan.idx_shape
        x = b.proxy(plan.x)
        # torch.gather reads x only up to idx's extent along the other dims
        cut = tuple(slice(0, ish[i]) if i != dim and ish[i] < xs[i] else slice(None)
                    for i in range(len(xs)))
        if any(c != slice(None) for c in cut):
            x = x[cut]
        xshape = tuple(xs[i] if i == dim else ish[i] for i in range(len(xs)))
        if isinstance(plan, ElementsPlan):
            if isinstance(plan.idx, torch.Tensor):
                idx = plan.idx
                idx = idx.expand(ish) if tuple(idx.shape) != tuple(ish) else idx
            else:
                idx = b.proxy(plan.idx)
            return node_of(kernels.gather_elements(
                b, x, dim, idx, x_shape=xshape, dtype=plan.dtype,
                known_finite=plan.known_finite, fm=plan.fm,
            ))
        bdims, rdims, n, k = plan.bdims, plan.rdims, plan.n, plan.k
        order = [*bdims, dim, *rdims]
        if order != list(range(len(xs))):
            x = x.permute(*order)
        bsz = math.prod(ish[i] for i in bdims)
        rsz = math.prod(ish[i] for i in rdims)
        x3 = x.reshape(bsz, n, rsz)
        out_perm_shape = tuple(ish[i] for i in bdims) + (k,) + tuple(ish[i] for i in rdims)
        if isinstance(plan, SlicePlan):
            y = kernels.slice_rows(x3, list(plan.pieces), n)
        else:
            if isinstance(plan.core, torch.Tensor):
                core = plan.core
            else:
                core = b.proxy(plan.core)
                if plan.align is not None:
                    core = core.reshape(plan.align)
            core = core.permute(*order) if order != list(range(len(xs))) else core
            core = core.reshape(bsz, k) if bsz > 1 else core.reshape(k)
            y = kernels.take_rows(b, x3, core, pre=bsz, n=n, post=rsz, k=k, batched=bsz > 1,
                                  dtype=plan.dtype, known_finite=plan.known_finite, fm=plan.fm)
        y = y.reshape(out_perm_shape)
        if order != list(range(len(xs))):
            inv = [order.index(i) for i in range(len(xs))]
            y = y.permute(*inv)
        return node_of(y)
