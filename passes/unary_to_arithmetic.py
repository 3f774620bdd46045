"""unary_to_arithmetic: for a target without Neg or Reciprocal, they become a Mul or a Div.

Covers `-x` / `torch.neg` / `aten.neg` (rotary embeddings' rotate_half in Llama, Mistral,
Qwen2, Gemma, Phi), `torch.reciprocal` / `aten.reciprocal` and `torch.rsqrt` / `aten.rsqrt`
(RMSNorm; the exporter writes it as Reciprocal(Sqrt(x))). RKNN-Toolkit2 (1.4.0 and 2.x)
lists neither Neg nor Reciprocal, but has Mul, Div and Sqrt.

Algebra:
    neg(x)        = x * -1         (IEEE: the sign flipped, -0.0 and +-inf included; a NaN
                                    stays NaN, its sign bit not necessarily flipped)
    reciprocal(x) = 1 / x          (one correctly rounded division, as ONNX's Reciprocal)
    rsqrt(x)      = 1 / Sqrt(x)
ONNX ops: Mul; Div (and Sqrt).

Legality (each a skip reason):
1. a target is given and lacks the op the node exports to (Neg; Reciprocal for reciprocal
   and rsqrt);
2. the target has Mul (for neg), Div and Sqrt (for reciprocal / rsqrt);
3. the operand is a tensor of known dtype: neg of a float or signed integer, reciprocal /
   rsqrt of a float.

Numerics: neg is bit-exact for every non-NaN value (integers wrap alike at the minimum); a
NaN stays a NaN, but `x * -1` keeps its sign bit where Neg flips it (a NaN's sign carries
nothing). reciprocal and rsqrt give
exactly what the exported file of the original gives (1/x rounded once); PyTorch's CPU
rsqrt kernel is not 1/sqrt(x), so against PyTorch rsqrt is rounding-level: at most 2 ulp
apart (measured on 10M floats; against float64 PyTorch's is within 1.49 ulp, 1/Sqrt within
1.96).
Cost: one elementwise op for another (two for rsqrt, as before).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from fxlower.graph import Builder, calls, node_of
from fxlower.rewrite import Context, Plan, RewritePass, Skip

aten = torch.ops.aten

# kind -> (ONNX op the exporter writes, spellings, ONNX ops of the replacement)
_KINDS: dict[str, tuple[str, set[Any], tuple[str, ...]]] = {
    "neg": ("Neg", {operator.neg, torch.neg, aten.neg.default, "neg", "__neg__"}, ("Mul",)),
    "reciprocal": ("Reciprocal", {torch.reciprocal, aten.reciprocal.default, "reciprocal"},
                   ("Div",)),
    "rsqrt": ("Reciprocal", {torch.rsqrt, aten.rsqrt.default, "rsqrt"}, ("Div", "Sqrt")),
}


@dataclass(frozen=True)
class Unary:
    node: fx.Node
    kind: str
    x: fx.node.Argument


@dataclass(frozen=True, kw_only=True)
class ArithmeticPlan(Plan):
    kind: str
    x: fx.Node
    dtype: torch.dtype


class UnaryToArithmetic(RewritePass[Unary, ArithmeticPlan]):
    name = "unary_to_arithmetic"

    def match(self, node: fx.Node, ctx: Context) -> Unary | None:
        target = ctx.options.target
        if target is None or node.kwargs:
            return None
        for kind, (onnx_op, spellings, _) in _KINDS.items():
            if calls(node, spellings) and len(node.args) == 1:
                return None if target.allows(onnx_op) else Unary(node, kind, node.args[0])  # 1.
        return None

    def check(self, m: Unary, ctx: Context) -> ArithmeticPlan | Skip:
        target = ctx.options.target
        assert target is not None
        onnx_op, _, need = _KINDS[m.kind]
        lack = sorted(target.forbidden_in(need))
        if lack:  # 2.
            return Skip(f"target '{target.name}' lacks {onnx_op}, and its arithmetic form "
                        f"needs {', '.join(lack)}")
        s = ctx.spec(m.x)
        if not isinstance(m.x, fx.Node) or s is None:  # 3.
            return Skip("the operand's dtype is not known when lowering")
        floats = s.dtype.is_floating_point
        if m.kind == "neg" and not (floats or s.dtype in (torch.int8, torch.int16, torch.int32,
                                                           torch.int64)):
            return Skip(f"neg of a {s.dtype} tensor")
        if m.kind != "neg" and not floats:
            return Skip(f"{m.kind} of a {s.dtype} tensor")
        detail = {"neg": "x * -1 (bit-exact but a NaN's sign bit)",
                  "reciprocal": "1 / x (bit-exact with ONNX's Reciprocal)",
                  "rsqrt": "1 / Sqrt(x) (the exported original's value; within 2 ulp of "
                           "PyTorch's rsqrt kernel)"}[m.kind]
        return ArithmeticPlan(detail=detail, kind=m.kind, x=m.x, dtype=s.dtype)

    def replace(self, plan: ArithmeticPlan, b: Builder) -> fx.Node:
        x = b.proxy(plan.x)
        if plan.kind == "neg":
            return node_of(x * -1)
        if plan.kind == "rsqrt":
            x = torch.sqrt(x)
        # a tensor numerator: `1 / x` would be traced as aten.reciprocal again
        one = b.const(torch.ones((), dtype=plan.dtype), "one")
        return node_of(torch.div(one, x))
