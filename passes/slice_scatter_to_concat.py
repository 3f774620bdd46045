"""slice_scatter_to_concat: writing a static slice or select becomes Slice + Concat.

Covers `torch.slice_scatter`, `Tensor.slice_scatter`, `aten.slice_scatter` (slice
assignment `x[:, 1:3] = v`, `x[::2] = v` after torch.export's functionalisation) and
`torch.select_scatter`, `Tensor.select_scatter`, `aten.select_scatter` (`x[:, 0] = v`,
`x[-1] = v`). The exporter makes ScatterND / ScatterElements of them.

Algebra (along `dim`, x of size N there; the written positions start, start+step, ...,
last, m of them, from Python's slice rules):
    step 1:     out = cat(x[:start], src, x[last+1:])
    step s > 1: out = cat(x[:start], mid, src[m-1:], x[last+1:]) with
                mid = cat(src[:m-1].unsqueeze(dim+1),
                          x[start:last].unflatten(dim, (m-1, s))[:, 1:]).flatten(dim, dim+1)
                (the written element first in each group of s, then the s-1 kept ones)
    select i:   out = cat(x[:i], src.unsqueeze(dim), x[i+1:])
Nothing is computed: every output element is a copy of an input element.

Legality (each a skip reason):
1. static shapes of x and src are known (pass example_inputs);
2. dim, start, end, step and the select index are known when lowering (not data-dependent);
3. src has x's dtype and the written slice's shape (PyTorch raises otherwise).

Numerics: exact for every dtype and value: Slice, Reshape and Concat copy bits (NaN, -0.0,
int64 beyond 2**24).
Cost: no arithmetic; one Concat of at most four pieces (plus one Reshape-Concat-Reshape for a
step > 1).

Target legality: refused, naming the missing ops, when the target lacks any op in
`scatter_ops.SLICE_OPS` (this rewrite has a single formulation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import Tensor
from fxlower.kernels import scatter as so
from fxlower.kernels.scatter import dim_of, scatter_op
from fxlower.normalise import int_value
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import ScatterCall


def _static(a: object, none_ok: bool = False) -> int | None | str:
    """An int known when lowering, None for a literal None (when allowed), else "dynamic"."""
    if a is None and none_ok:
        return None
    v = int_value(a)
    return "dynamic" if v is None else v


@dataclass(frozen=True, kw_only=True)
class ConcatPlan(Plan):
    """The written positions first, first + step, ..., m of them, along dim (size n in x)."""

    x: fx.Node
    src: fx.Node
    shape: tuple[int, ...]  # x's
    dim: int
    n: int
    first: int
    m: int
    step: int
    select: bool  # a select_scatter: src lacks dim


class SliceScatterToConcat(RewritePass[ScatterCall, ConcatPlan]):
    name = "slice_scatter_to_concat"

    def match(self, node: fx.Node, ctx: Context) -> ScatterCall | None:
        op = scatter_op(node)
        if op is None or op.kind not in ("slice_scatter", "select_scatter"):
            return None
        return ScatterCall(node, op)

    def check(self, m: ScatterCall, ctx: Context) -> ConcatPlan | Skip:
        problem_t = so.target_problem(ctx.options.target, so.SLICE_OPS, int64_indices=False)
        if problem_t is not None:  # target legality
            return Skip(problem_t)
        op = m.op
        sx, ss = ctx.spec(op.x), ctx.spec(op.src)
        if sx is None or ss is None:  # 1.
            return Skip("shapes unknown: pass example_inputs so the slice bounds are static")
        assert isinstance(op.src, fx.Node)  # it has a spec
        bounds = [_static(op.dim)]
        if op.kind == "select_scatter":
            bounds.append(_static(op.index))
        else:
            bounds += [_static(op.start, True), _static(op.end, True), _static(op.step)]
        if "dynamic" in bounds:  # 2.
            return Skip("the written slice's bounds are not known when lowering (data-dependent)")
        known = cast("list[int | None]", bounds)  # no "dynamic" left
        dim = dim_of(known[0], sx.rank)
        n = sx.shape[dim]
        if op.kind == "select_scatter":
            i = int(cast(int, known[1])) % n  # _static without none_ok: an int
            first, count, step = i, 1, 1
            want = sx.shape[:dim] + sx.shape[dim + 1:]
        else:
            rng = range(n)[slice(known[1], known[2], known[3])]
            first, count, step = (rng.start, len(rng), rng.step) if len(rng) else (0, 0, 1)
            want = sx.shape[:dim] + (count,) + sx.shape[dim + 1:]
        if ss.dtype != sx.dtype:  # 3.
            return Skip(f"src has dtype {ss.dtype}, the tensor written into {sx.dtype}")
        if tuple(ss.shape) != tuple(want):  # 3.
            return Skip(f"src has shape {tuple(ss.shape)}, the written slice {tuple(want)}")
        what = "select" if op.kind == "select_scatter" else f"{count} of {n} (step {step})"
        return ConcatPlan(detail=f"Slice + Concat: {what} along dim {dim}", x=op.x, src=op.src,
                          shape=tuple(sx.shape), dim=dim, n=n, first=first, m=count, step=step,
                          select=op.kind == "select_scatter")

    def replace(self, plan: ConcatPlan, b: Builder) -> fx.Node:
        dim, n, first, m, step = plan.dim, plan.n, plan.first, plan.m, plan.step
        x, src = b.proxy(plan.x), b.proxy(plan.src)
        if m == 0:
            return node_of(x)  # an empty slice writes nothing
        if plan.select:
            src = src.unsqueeze(dim)

        def along(t: Tensor, a: int, z: int | None) -> Tensor:
            return t[(slice(None),) * dim + (slice(a, z),)]

        last = first + (m - 1) * step
        pieces = [along(x, 0, first)] if first > 0 else []
        if step == 1:
            pieces.append(src)
        else:
            if m > 1:
                shape = list(plan.shape)
                group = shape[:dim] + [m - 1, step] + shape[dim + 1:]
                flat = shape[:dim] + [(m - 1) * step] + shape[dim + 1:]
                kept = along(x, first, last).reshape(group)
                kept = kept[(slice(None),) * (dim + 1) + (slice(1, None),)]
                head = along(src, 0, m - 1).unsqueeze(dim + 1)
                pieces.append(torch.cat([head, kept], dim=dim + 1).reshape(flat))
            pieces.append(along(src, m - 1, m))
        if last + 1 < n:
            pieces.append(along(x, last + 1, None))
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=dim)
        return node_of(out)
