"""layer_norm_to_reductions: for a target without LayerNormalization, layer norm becomes the
reductions and elementwise ops it is made of.

Covers `nn.LayerNorm`, `F.layer_norm` and `aten.layer_norm` (the exporter writes each as one
`LayerNormalization` node at opset 17 and newer, which RKNN-Toolkit2 1.4.0, Kneron's NPUs
and TIDL do not list).

Algebra, over the normalised (last k) dims: `mean = ReduceMean(x)`, `d = x - mean`,
`var = ReduceMean(d * d)` (biased, as layer norm's), `y = d / Sqrt(var + eps)`, then
`y * weight + bias` when present. ONNX ops: ReduceMean, Sub, Mul, Add, Sqrt, Div.

Legality (each a skip reason):
1. a target is given and lacks LayerNormalization (otherwise the op stays: one fused node is
   what every runtime that has it wants);
2. the target has ReduceMean, Sub, Mul, Add, Sqrt and Div;
3. the input is a float32 or float64 tensor of known shape (half precision would round the
   sums PyTorch accumulates in float32);
4. weight and bias, when given, are parameters or constants of the normalised shape.

Numerics: not bit-exact — PyTorch's CPU kernel accumulates mean and variance in one pass
(Welford) and multiplies by rstd; the decomposition sums twice and divides. Both round at
float32; the difference stays at rounding level (measured over 300 random shapes, scales
0.1-10, offsets, eps down to 1e-12: at most 1.3e-5 relative to the output's scale; the
property test in tests/passes/test_layer_norm_to_reductions.py holds it to 1e-4), and
verification holds every use to the tolerance grounded in the original's own float32 error
(a use beyond it is rolled back, never returned wrong).
Cost: two reductions and five elementwise ops per element instead of one fused node; no
multiply-adds of a matrix product, no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from fxlower.graph import Builder, arg, get_attr, node_of
from fxlower.rewrite import Context, Plan, RewritePass, Skip

_OPS = ("ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div")


@dataclass(frozen=True)
class LayerNorm:
    """A layer norm call, taken apart (module attributes read as the call's arguments)."""

    node: fx.Node
    x: fx.node.Argument
    shape: tuple[int, ...]  # the normalised shape
    weight: object  # a node (parameter/constant), a module parameter's path, or None
    bias: object
    eps: float


@dataclass(frozen=True, kw_only=True)
class ReductionsPlan(Plan):
    x: fx.Node
    dims: tuple[int, ...]  # the normalised dims, negative
    weight: object
    bias: object
    eps: float
    dtype: torch.dtype


def _bind(node: fx.Node, ctx: Context) -> LayerNorm | None:
    if node.op == "call_module":
        mod = get_attr(ctx.gm, str(node.target))
        if not isinstance(mod, nn.LayerNorm) or not node.args:
            return None
        name = str(node.target)  # the module's own parameters, read through get_attr
        return LayerNorm(node, node.args[0], tuple(mod.normalized_shape),
                         None if mod.weight is None else f"{name}.weight",
                         None if mod.bias is None else f"{name}.bias", float(mod.eps))
    if node.op != "call_function" or node.target not in (F.layer_norm,
                                                         torch.ops.aten.layer_norm.default):
        return None
    shape = arg(node, 1, "normalized_shape")
    eps = arg(node, 4, "eps")
    return LayerNorm(node, node.args[0], tuple(shape) if isinstance(shape, (list, tuple))
                     else (), arg(node, 2, "weight"), arg(node, 3, "bias"),
                     1e-5 if eps is None else float(eps))


class LayerNormToReductions(RewritePass[LayerNorm, ReductionsPlan]):
    name = "layer_norm_to_reductions"

    def match(self, node: fx.Node, ctx: Context) -> LayerNorm | None:
        target = ctx.options.target
        if target is None or target.allows("LayerNormalization"):  # 1.
            return None
        return _bind(node, ctx)

    def check(self, m: LayerNorm, ctx: Context) -> ReductionsPlan | Skip:
        target = ctx.options.target
        assert target is not None
        lack = sorted(target.forbidden_in(_OPS))
        if lack:  # 2.
            return Skip(f"target '{target.name}' lacks {', '.join(lack)} as well")
        s = ctx.spec(m.x)
        if not isinstance(m.x, fx.Node) or s is None:  # 3.
            return Skip("the input's shape is not known when lowering")
        if s.dtype not in (torch.float32, torch.float64):
            return Skip(f"a {s.dtype} input: PyTorch accumulates it in float32, a "
                        "decomposition in its own dtype would round differently")
        k = len(m.shape)
        if not k or tuple(s.shape[-k:]) != m.shape:
            return Skip(f"normalised shape {m.shape} is not the input's last dims")
        for what, t in (("weight", m.weight), ("bias", m.bias)):  # 4.
            if t is None:
                continue
            if isinstance(t, fx.Node) and not ctx.is_const(t):
                return Skip(f"the {what} is computed at run time")
        return ReductionsPlan(detail=f"ReduceMean/Sub/Mul/Add/Sqrt/Div over the last {k} "
                                     f"dim(s) (rounding-level, not bit-exact)",
                              x=m.x, dims=tuple(range(-k, 0)), weight=m.weight, bias=m.bias,
                              eps=m.eps, dtype=s.dtype)

    def replace(self, plan: ReductionsPlan, b: Builder) -> fx.Node:
        x = b.proxy(plan.x)
        mean = x.mean(dim=plan.dims, keepdim=True)
        d = x - mean
        var = (d * d).mean(dim=plan.dims, keepdim=True)
        # eps as a one-element tensor, not a Python scalar: the exporter's optimizer
        # (onnxscript's add_0 rule, torch 2.13) deletes `x + c` for a scalar |c| <= 1e-8, so
        # a scalar eps of 1e-12 vanished from the file and constant rows became 0/0 = NaN
        eps = b.const(torch.tensor([plan.eps], dtype=plan.dtype), "layer_norm_eps")
        y = d / torch.sqrt(var + eps)
        for t, combine in ((plan.weight, torch.mul), (plan.bias, torch.add)):
            if t is None:
                continue
            node = t if isinstance(t, fx.Node) else b.graph.get_attr(str(t))
            y = combine(y, b.proxy(node))
        return node_of(y)
