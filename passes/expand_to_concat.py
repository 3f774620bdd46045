"""expand_to_concat: for a target without Expand, a broadcast copy becomes Concat of copies.

Covers `Tensor.expand`, `Tensor.expand_as` and `aten.expand` (Llama/Mistral/Qwen2's
grouped-query `repeat_kv`, rotary frequency tables, attention masks): the exporter writes
Expand, which RKNN-Toolkit2 1.4.0 does not list.

Algebra: with the static shapes, `x` is first given the result's rank (Reshape, leading
dims of size 1), then every dim of size 1 that grows to n is `Concat([x] * n, dim)`: a copy
of the same values. ONNX ops: Reshape, Concat.

Legality (each a skip reason):
1. a target is given and lacks Expand (otherwise the op stays);
2. the target has Concat (and Reshape when ranks differ);
3. the input's and the result's shapes are known, and the result is not empty;
4. each grown dim grows to at most 256 copies (a Concat of more inputs is no longer a sane
   graph).

Numerics: bit-exact (a copy: no arithmetic, any dtype).
Cost: the result's elements written once, as Expand writes them (a runtime that kept the
broadcast virtual now materialises it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from fxlower.graph import Builder, calls, node_of
from fxlower.rewrite import Context, Plan, RewritePass, Skip

_SPELLINGS = (torch.ops.aten.expand.default, "expand", "expand_as")
MAX_COPIES = 256


@dataclass(frozen=True)
class Expand:
    node: fx.Node
    x: fx.node.Argument


@dataclass(frozen=True, kw_only=True)
class ConcatPlan(Plan):
    x: fx.Node
    ranked: tuple[int, ...]  # x's shape with leading 1s to the result's rank
    reshape: bool
    grow: tuple[tuple[int, int], ...]  # (dim, copies)


class ExpandToConcat(RewritePass[Expand, ConcatPlan]):
    name = "expand_to_concat"

    def match(self, node: fx.Node, ctx: Context) -> Expand | None:
        target = ctx.options.target
        if target is None or target.allows("Expand"):  # 1.
            return None
        if not calls(node, _SPELLINGS):
            return None
        return Expand(node, node.args[0] if node.args else None)

    def check(self, m: Expand, ctx: Context) -> ConcatPlan | Skip:
        target = ctx.options.target
        assert target is not None
        sx, out = ctx.spec(m.x), ctx.spec(m.node)
        if not isinstance(m.x, fx.Node) or sx is None or out is None:  # 3.
            return Skip("the shapes are not known when lowering")
        if out.numel == 0:
            return Skip("an empty result (no copy to make)")
        ranked = (1,) * (out.rank - sx.rank) + tuple(sx.shape)
        grow = tuple((d, n) for d, (a, n) in enumerate(zip(ranked, out.shape, strict=True))
                     if a != n)
        need = ({"Concat"} if grow else set()) | ({"Reshape"} if out.rank != sx.rank else set())
        lack = sorted(target.forbidden_in(need))
        if lack:  # 2.
            return Skip(f"target '{target.name}' lacks Expand, and copies need "
                        f"{', '.join(lack)}")
        big = [f"dim {d} to {n}" for d, n in grow if n > MAX_COPIES]
        if big:  # 4.
            return Skip(f"more than {MAX_COPIES} copies ({', '.join(big)})")
        what = ", ".join(f"dim {d} x{n}" for d, n in grow) or "no dim grows"
        return ConcatPlan(detail=f"Concat of copies ({what}; bit-exact)", x=m.x, ranked=ranked,
                          reshape=out.rank != sx.rank, grow=grow)

    def replace(self, plan: ConcatPlan, b: Builder) -> fx.Node:
        y = b.proxy(plan.x)
        if plan.reshape:
            y = y.reshape(plan.ranked)
        for d, n in plan.grow:
            y = torch.cat([y] * n, d)
        return node_of(y)
