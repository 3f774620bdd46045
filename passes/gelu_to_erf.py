"""gelu_to_erf: for a target without Gelu, GELU becomes the elementwise ops it is defined by.

Covers `nn.GELU`, `F.gelu` and `aten.gelu` (the exporter writes each as one `Gelu` node at
opset 20, which RKNN-Toolkit2 (1.4.0 and 2.x) and Kneron's NPUs do not list).

Algebra (PyTorch's own definitions of the two GELUs):
- `approximate="none"`: `x * 0.5 * (1 + erf(x / sqrt(2)))`. With the target's `Erf`
  (rknn2@2.x): Mul, Add, Erf. Without it (rknn2@1.4.0), erf is the rational approximation
  XLA and Eigen use for float32, `erf(x) ~ c * P(c^2) / Q(c^2)` with `c = clamp(x, -4, 4)`
  and P, Q of degree 6 and 4 in `c^2` (Clip, Mul, Add, Div): at most 4.3e-7 from the true
  erf, 3.6 float32 eps of its value (measured on 2M points of [-6, 6]).
- `approximate="tanh"`: `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`
  (Mul, Add, Tanh; x^3 as two products, no Pow).

Legality (each a skip reason):
1. a target is given and lacks Gelu (otherwise the op stays: one fused node is what every
   runtime that has it wants);
2. the target has the ops of one formulation above (the Erf form, else the rational erf;
   the tanh form for approximate="tanh");
3. the input is a float32 tensor, or float64 with the Erf or tanh form (the rational erf
   is accurate to float32 only; half precision would round each step where PyTorch
   computes in float32).

Numerics: not bit-exact, rounding-level: against PyTorch's float32 kernel, at most 4.4e-7
of max(|x|, 1) for both erf forms and 1.2e-7 for the tanh form (measured on 2M points of
[-6, 6] and 200k points of [-1e4, 1e4]; the property test holds every form to 1e-6).
At x = +inf PyTorch's CPU kernel returns NaN while every form here (and ONNX's Gelu)
returns +inf, and for 1.7e38 < x < inf PyTorch's kernel overflows to +inf where the
decompositions return x; -inf and NaN give NaN in both. Verification holds every use to the tolerance
grounded in the original's own float32 error (a use beyond it is rolled back).
Cost: 5 (Erf form), 28 (rational erf) or 9 (tanh form) elementwise ops per element instead
of one; no multiply-adds of a matrix product, no mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from fxlower.graph import Builder, arg, get_attr, node_of
from fxlower.rewrite import Context, Plan, RewritePass, Skip

# float32 erf ~ x * P(x^2) / Q(x^2) on x clamped to [-4, 4] (XLA's ErfImpl32, Eigen's
# generic_fast_erf_float); coefficients highest degree first
_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
         -7.37332916720468e-03, -1.42647390514189e-02)

FORMS: dict[str, tuple[str, ...]] = {
    "erf": ("Mul", "Add", "Erf"),
    "rational": ("Mul", "Add", "Div", "Clip"),
    "tanh": ("Mul", "Add", "Tanh"),
}


@dataclass(frozen=True)
class Gelu:
    node: fx.Node
    x: fx.node.Argument
    approximate: str


@dataclass(frozen=True, kw_only=True)
class GeluPlan(Plan):
    x: fx.Node
    form: str  # a key of FORMS
    dtype: torch.dtype


def _bind(node: fx.Node, ctx: Context) -> Gelu | None:
    if node.op == "call_module":
        mod = get_attr(ctx.gm, str(node.target))
        if not isinstance(mod, nn.GELU) or not node.args:
            return None
        return Gelu(node, node.args[0], mod.approximate)
    if node.op != "call_function" or node.target not in (F.gelu, torch.ops.aten.gelu.default):
        return None
    x = arg(node, 0, "input") if node.target is F.gelu else arg(node, 0, "self")
    return Gelu(node, x, str(arg(node, 1, "approximate", "none")))


def erf_rational(x: torch.Tensor) -> torch.Tensor:
    """erf by the float32 rational approximation (also usable on proxies)."""
    c = torch.clamp(x, -4.0, 4.0)
    c2 = c * c
    p = c2 * _ALPHA[0] + _ALPHA[1]
    for a in _ALPHA[2:]:
        p = p * c2 + a
    q = c2 * _BETA[0] + _BETA[1]
    for b in _BETA[2:]:
        q = q * c2 + b
    return c * p / q


def gelu(x: torch.Tensor, form: str, const: Any = float) -> torch.Tensor:
    """GELU in one of FORMS (on tensors or proxies). `const` makes the constants that are
    not exact in float32 (a Builder passes typed tensors: a Python float in the graph is
    exported as a float32 scalar, which would round a float64 model's constants)."""
    if form == "tanh":
        inner = const(math.sqrt(2.0 / math.pi)) * (x + const(0.044715) * (x * x * x))
        return 0.5 * x * (1.0 + torch.tanh(inner))
    half = x * const(math.sqrt(0.5))
    e = torch.erf(half) if form == "erf" else erf_rational(half)
    return x * 0.5 * (1.0 + e)


class GeluToErf(RewritePass[Gelu, GeluPlan]):
    name = "gelu_to_erf"

    def match(self, node: fx.Node, ctx: Context) -> Gelu | None:
        target = ctx.options.target
        if target is None or target.allows("Gelu"):  # 1.
            return None
        return _bind(node, ctx)

    def check(self, m: Gelu, ctx: Context) -> GeluPlan | Skip:
        target = ctx.options.target
        assert target is not None
        s = ctx.spec(m.x)
        if not isinstance(m.x, fx.Node) or s is None:
            return Skip("the input's dtype is not known when lowering")
        if s.dtype not in (torch.float32, torch.float64):  # 3.
            return Skip(f"a {s.dtype} input: PyTorch computes GELU in float32, a "
                        "decomposition in its own dtype would round differently")
        forms = ("tanh",) if m.approximate == "tanh" else ("erf", "rational")
        lacks: list[str] = []
        for form in forms:  # 2.
            lack = sorted(target.forbidden_in(FORMS[form]))
            if lack:
                lacks.append(f"the {form} form needs {', '.join(lack)}")
                continue
            if form == "rational" and s.dtype == torch.float64:  # 3.
                lacks.append("the rational erf is accurate to float32 only (a float64 input)")
                continue
            what = {"erf": "x/2 * (1 + Erf(x/sqrt 2))",
                    "rational": "x/2 * (1 + erf(x/sqrt 2)), erf as float32 rational Clip/Mul/"
                                "Add/Div",
                    "tanh": "x/2 * (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3)))"}[form]
            return GeluPlan(detail=f"{what} (rounding-level, not bit-exact)", x=m.x, form=form,
                            dtype=s.dtype)
        return Skip(f"target '{target.name}' lacks Gelu, and " + "; ".join(lacks))

    def replace(self, plan: GeluPlan, b: Builder) -> fx.Node:
        def const(v: float) -> Any:
            return b.const(torch.tensor(v, dtype=plan.dtype), "gelu_constant")

        return node_of(gelu(b.proxy(plan.x), plan.form, const))
