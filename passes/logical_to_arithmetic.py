"""logical_to_arithmetic: for a target without a logical op (And, Or, Xor, Not) or without
IsNaN / IsInf, the op becomes arithmetic on 0/1 floats cast back to bool.

Covers, on boolean operands: `a & b`, `a | b`, `a ^ b`, `~a` (operator, Tensor method,
`torch.bitwise_*` and `aten.__and__` / `aten.bitwise_*` spellings), and on any operands
`torch.logical_and/or/xor/not` (non-bool operands are cast to bool first, as PyTorch's own
kernel tests `!= 0`); `a != b` / `torch.ne` on any dtype (exported as Not(Equal)); and
`torch.isnan(x)` and `torch.isinf(x)` on float tensors. The exporter writes them as And /
Or / Xor / Not / IsNaN / IsInf, which RKNN-Toolkit2 (Not, Or, Xor, IsNaN, IsInf in 2.x; And
too in 1.4.0) and Kneron's NPUs do not list (RoBERTa's position ids start with
`input_ids.ne(padding_idx)`).

Algebra, with `f(a) = Cast(a, float32)` in {0, 1}:
    a & b = Cast(f(a) * f(b), bool)        a | b = Cast(f(a) + f(b), bool)
    a ^ b = Cast(f(a) - f(b), bool)        ~a    = Cast(1 - f(a), bool)
    a != b = Cast(1 - f(Equal(a, b)), bool)
    isnan(x) = Cast(1 - f(x == x), bool)   isinf(x) = Cast(f(x == inf) + f(x == -inf), bool)
(a Cast to bool is `!= 0`; every intermediate is one of -1, 0, 1, 2). ONNX ops: Cast, Mul,
Add, Sub, and Equal for !=, IsNaN and IsInf.

Legality (each a skip reason):
1. a target is given and lacks the op the node exports to (otherwise the op stays);
2. the target has Cast and the arithmetic op of the formulation (and Equal for !=, IsNaN /
   IsInf);
3. the operands' dtypes are known: bool for the bitwise spellings (on integers they are
   bitwise ops, BitwiseAnd & co., not logical ones; `mask & 2` is one too, PyTorch promotes
   it to int64), a floating dtype for isnan / isinf.

Numerics: bit-exact (every value above is an exact small integer in float32).
Cost: two to four elementwise ops per element instead of one; no matrix product, no mask.
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

# op kind -> ONNX op it exports to, spellings that take bool operands only (bitwise), and
# spellings that take any operand (logical: cast to bool first)
_KINDS: dict[str, tuple[str, set[Any], set[Any]]] = {
    "and": ("And", {operator.and_, torch.bitwise_and, aten.__and__.Tensor,
                    aten.bitwise_and.Tensor, "__and__", "bitwise_and"},
            {torch.logical_and, aten.logical_and.default, "logical_and"}),
    "or": ("Or", {operator.or_, torch.bitwise_or, aten.__or__.Tensor, aten.bitwise_or.Tensor,
                  "__or__", "bitwise_or"},
           {torch.logical_or, aten.logical_or.default, "logical_or"}),
    "xor": ("Xor", {operator.xor, torch.bitwise_xor, aten.__xor__.Tensor,
                    aten.bitwise_xor.Tensor, "__xor__", "bitwise_xor"},
            {torch.logical_xor, aten.logical_xor.default, "logical_xor"}),
    "not": ("Not", {operator.invert, torch.bitwise_not, aten.bitwise_not.default,
                    "__invert__", "bitwise_not"},
            {torch.logical_not, aten.logical_not.default, "logical_not"}),
    # a != b exports as Not(Equal(a, b)): any dtype
    "ne": ("Not", set(), {operator.ne, torch.ne, aten.ne.Tensor, aten.ne.Scalar, "ne",
                          "__ne__"}),
    "isnan": ("IsNaN", set(), {torch.isnan, aten.isnan.default, "isnan"}),
    "isinf": ("IsInf", set(), {torch.isinf, aten.isinf.default, "isinf"}),
}
# ONNX ops of each formulation
_NEEDS: dict[str, tuple[str, ...]] = {
    "and": ("Cast", "Mul"), "or": ("Cast", "Add"), "xor": ("Cast", "Sub"),
    "not": ("Cast", "Sub"), "ne": ("Equal", "Cast", "Sub"), "isnan": ("Equal", "Cast", "Sub"), "isinf": ("Equal", "Cast", "Add"),
}


@dataclass(frozen=True)
class Logical:
    node: fx.Node
    kind: str  # a key of _KINDS
    operands: tuple[fx.node.Argument, ...]
    bitwise: bool  # a bitwise spelling (bool operands only)


@dataclass(frozen=True, kw_only=True)
class ArithmeticPlan(Plan):
    kind: str
    operands: tuple[fx.node.Argument, ...]
    is_bool: tuple[bool, ...]  # per operand: a bool tensor (or literal), no cast to bool first


def _bind(node: fx.Node) -> Logical | None:
    if node.kwargs:
        return None
    for kind, (_, bitwise, logical) in _KINDS.items():
        if calls(node, bitwise | logical):
            want = 1 if kind in ("not", "isnan", "isinf") else 2
            if len(node.args) != want:
                return None
            return Logical(node, kind, tuple(node.args), calls(node, bitwise))
    return None


def _as_float(b: Builder, v: fx.node.Argument, is_bool: bool) -> Any:
    """A 0/1 float32 operand (a non-bool tensor cast to bool first, as logical ops read it)."""
    if isinstance(v, fx.Node):
        p = b.proxy(v)
        return (p if is_bool else p.to(torch.bool)).to(torch.float32)
    return float(bool(v))


class LogicalToArithmetic(RewritePass[Logical, ArithmeticPlan]):
    name = "logical_to_arithmetic"

    def match(self, node: fx.Node, ctx: Context) -> Logical | None:
        target = ctx.options.target
        m = _bind(node)
        if m is None or target is None or target.allows(_KINDS[m.kind][0]):  # 1.
            return None
        return m

    def check(self, m: Logical, ctx: Context) -> ArithmeticPlan | Skip:
        target = ctx.options.target
        assert target is not None
        onnx_op = _KINDS[m.kind][0]
        lack = sorted(target.forbidden_in(_NEEDS[m.kind]))
        if lack:  # 2.
            return Skip(f"target '{target.name}' lacks {onnx_op}, and its arithmetic form "
                        f"needs {', '.join(lack)}")
        tensors = [v for v in m.operands if isinstance(v, fx.Node)]
        specs = [ctx.spec(v) for v in tensors]
        if not tensors or any(s is None for s in specs):  # 3.
            return Skip("the operands' dtypes are not known when lowering")
        dtypes = {s.dtype for s in specs if s is not None}
        if m.kind == "ne":
            pass  # any dtypes: Equal compares them as they are
        elif m.kind in ("isnan", "isinf"):
            if not all(d.is_floating_point for d in dtypes):
                return Skip(f"{onnx_op} of a {sorted(map(str, dtypes))[0]} tensor is not a "
                            "float test")
        elif m.bitwise and dtypes != {torch.bool}:
            return Skip(f"a bitwise {m.kind} of {sorted(map(str, dtypes))[0]} operands "
                        "(Bitwise ops, not logical ones)")
        elif m.bitwise and any(not isinstance(v, (fx.Node, bool)) for v in m.operands):
            return Skip(f"a bitwise {m.kind} of a bool tensor and a number: PyTorch promotes "
                        "it to an integer op")
        return ArithmeticPlan(detail=f"{onnx_op} as Cast/{'/'.join(_NEEDS[m.kind][1:])} "
                                     "arithmetic on 0/1 floats (bit-exact)",
                              kind=m.kind, operands=m.operands,
                              is_bool=tuple(not isinstance(v, fx.Node)
                                            or getattr(ctx.spec(v), "dtype", None) == torch.bool
                                            for v in m.operands))

    def replace(self, plan: ArithmeticPlan, b: Builder) -> fx.Node:
        k = plan.kind
        if k == "ne":
            a, c = plan.operands
            if not isinstance(a, fx.Node):  # == is symmetric; check: one is a tensor
                a, c = c, a
            assert isinstance(a, fx.Node)
            other: Any = b.proxy(c) if isinstance(c, fx.Node) else c
            eq = torch.eq(b.proxy(a), other).to(torch.float32)
            return node_of((1.0 - eq).to(torch.bool))
        if k in ("isnan", "isinf"):
            src = plan.operands[0]
            assert isinstance(src, fx.Node)  # check: a tensor of a floating dtype
            x = b.proxy(src)
            if k == "isnan":
                y = 1.0 - (x == x).to(torch.float32)
            else:
                y = (x == float("inf")).to(torch.float32) + (x == -float("inf")).to(torch.float32)
            return node_of(y.to(torch.bool))
        fs = [_as_float(b, v, i) for v, i in zip(plan.operands, plan.is_bool, strict=True)]
        if k == "not":
            y = 1.0 - fs[0]
        elif k == "and":
            y = fs[0] * fs[1]
        elif k == "or":
            y = fs[0] + fs[1]
        else:
            y = fs[0] - fs[1]
        return node_of(y.to(torch.bool))
