"""cumsum_to_matmul: for a target without CumSum, a cumulative sum becomes a product with a
constant triangular matrix.

Covers `torch.cumsum`, `Tensor.cumsum` and `aten.cumsum` (RoBERTa-style position ids,
`(input_ids != pad).int().cumsum(1)`, and wav2vec2's feature-vector masks): the exporter
writes CumSum, which RKNN-Toolkit2 (1.4.0 and 2.x), Kneron and TIDL do not list.

Algebra: with the summed dim moved last and `U[i, j] = 1 for i <= j` (an N x N constant),
`cumsum(x)[..., j] = sum_i x[..., i] * U[i, j] = (x @ U)[..., j]`, computed in the result's
dtype (PyTorch's: int64 for bool and integer inputs, or the `dtype` argument). ONNX ops:
MatMul (and Cast, and Transpose when the dim is not the last).

Legality (each a skip reason):
1. a target is given and lacks CumSum (otherwise the op stays);
2. the target has MatMul (and Cast / Transpose where they are needed);
3. the input's shape and dtype are known, and the summed dim has at most 2048 elements
   (U has N**2 entries);
4. the result is an integer dtype, or a float one with `assume_finite=True`: a product with
   U multiplies every later element by 0, and 0 * inf = NaN would spoil the earlier sums.

Numerics: integer results are bit-exact (integer sums in any order, wrapping as PyTorch's
does); float results (assume_finite only) are rounding-level (another summation order).
Note that the profile lists op types, not dtypes: an int64 MatMul is what the file holds.
Cost: numel(x) * N multiply-adds, an N x N constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from fxlower.graph import Builder, arg, calls, node_of
from fxlower.rewrite import Context, Plan, RewritePass, Skip

_SPELLINGS = (torch.cumsum, torch.ops.aten.cumsum.default, "cumsum")
MAX_N = 2048


@dataclass(frozen=True)
class Cumsum:
    node: fx.Node
    x: fx.node.Argument
    dim: object


@dataclass(frozen=True, kw_only=True)
class TriangularPlan(Plan):
    x: fx.Node
    dim: int  # non-negative
    rank: int
    n: int
    dtype: torch.dtype  # the result's
    cast: bool  # x's dtype differs from the result's


class CumsumToMatmul(RewritePass[Cumsum, TriangularPlan]):
    name = "cumsum_to_matmul"

    def match(self, node: fx.Node, ctx: Context) -> Cumsum | None:
        target = ctx.options.target
        if target is None or target.allows("CumSum"):  # 1.
            return None
        if not calls(node, _SPELLINGS):
            return None
        return Cumsum(node, arg(node, 0, "input"), arg(node, 1, "dim"))

    def check(self, m: Cumsum, ctx: Context) -> TriangularPlan | Skip:
        target = ctx.options.target
        assert target is not None
        sx, out = ctx.spec(m.x), ctx.spec(m.node)
        if not isinstance(m.x, fx.Node) or sx is None or out is None:  # 3.
            return Skip("the input's shape is not known when lowering")
        if not isinstance(m.dim, int) or sx.rank == 0:
            return Skip("the summed dim is not a constant of a tensor with dims")
        dim = m.dim % sx.rank
        n = sx.shape[dim]
        need = {"MatMul"} | ({"Cast"} if sx.dtype != out.dtype else set()) | (
            {"Transpose"} if dim != sx.rank - 1 else set())
        lack = sorted(target.forbidden_in(need))
        if lack:  # 2.
            return Skip(f"target '{target.name}' lacks CumSum, and its product form needs "
                        f"{', '.join(lack)}")
        if n > MAX_N:  # 3.
            return Skip(f"a cumulative sum over {n} > {MAX_N} elements (an N x N constant)")
        if out.dtype.is_floating_point and not ctx.options.assume_finite:  # 4.
            return Skip("a float cumulative sum as a product: 0 * inf = NaN would spoil the "
                        "earlier sums (assume_finite=True allows it, rounding-level)")
        exact = "bit-exact" if not out.dtype.is_floating_point else "rounding-level"
        numel = 1
        for s in sx.shape:
            numel *= s
        return TriangularPlan(detail=f"MatMul with a constant {n}x{n} upper triangle ({exact})",
                              macs=numel * n, x=m.x, dim=dim, rank=sx.rank, n=n,
                              dtype=out.dtype, cast=sx.dtype != out.dtype)

    def replace(self, plan: TriangularPlan, b: Builder) -> fx.Node:
        x = b.proxy(plan.x)
        if plan.cast:
            x = x.to(plan.dtype)
        last = plan.dim == plan.rank - 1
        if not last:
            x = x.transpose(plan.dim, -1)
        upper = torch.ones(plan.n, plan.n, dtype=plan.dtype).triu()
        y = x @ b.const(upper, f"cumsum_triangle_{plan.n}")
        if not last:  # PyTorch's result is contiguous; models .view() it
            y = y.transpose(plan.dim, -1).contiguous()
        return node_of(y)
