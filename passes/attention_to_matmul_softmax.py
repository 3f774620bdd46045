"""attention_to_matmul_softmax: for a target that lacks an op of the exporter's own
attention decomposition, `scaled_dot_product_attention` becomes the matrix products and the
softmax it is defined by, written with ops the target has.

Covers `F.scaled_dot_product_attention` and `aten.scaled_dot_product_attention` (what
transformers' "sdpa" attention calls). ONNX has no attention op below opset 23, so the
exporter decomposes the call itself (onnxscript's torchlib): MatMul, Mul, Sqrt, Softmax,
Transpose, Reshape, plus Add for a float mask, and for a boolean mask `Where` and
`Where(IsNaN(weights), 0, weights)` — an IsNaN in every attention layer that
RKNN-Toolkit2, Kneron and TIDL do not list.

Algebra (PyTorch's math reference, `_scaled_dot_product_attention_math`):
    bias = where(mask, 0, -inf) for a boolean mask, the mask itself for a float one, a
           constant 0/-inf bias of tril(ones(L, S)) for is_causal, nothing without a mask
    x = (q @ k^T) * scale + bias
    w = softmax(x, -1), and 0 on a row whose every entry is -inf (PyTorch's safe softmax:
        a fully masked row attends to nothing), tested as amax(x, -1) == -inf
    out = w @ v
ONNX ops: MatMul, Transpose, Mul, Softmax, ReduceMax, Equal, Where, and Add with a mask.

Formulation 0: a boolean mask that is a constant of all True (ViT, DINOv2: transformers
builds one) adds nothing; the call is kept without it, and the exporter writes its no-mask
form (MatMul, Mul, Sqrt, Softmax, Transpose, Reshape: no IsNaN, no Where), bit-exact; even
on a target that lacks some of those too (Kneron: Softmax), which then still blocks.

Legality (each a skip reason):
1. a target is given and lacks an op the exporter's decomposition of this call uses;
2. the target has every op above;
3. q, k, v have known shapes and a float32 / float64 dtype (half precision: PyTorch's
   kernels accumulate in float32), the mask is boolean or of q's dtype;
4. no dropout (dropout_p is the literal 0.0: eval-mode transformers), no grouped-query
   `enable_gqa`, and not both is_causal and a mask (PyTorch raises).

Numerics: not bit-exact, rounding-level: PyTorch's CPU kernel (flash attention for float32)
tiles the softmax and scales q and k by sqrt(scale) each; the decomposition scales the
product once. Measured over 400 random cases (L, S <= 40, E <= 64, bool / float / causal /
no mask, fully masked rows, q and k scaled up to 30x) against the float64 truth: at most
4.7e-5 of the output's scale, where PyTorch's own float32 kernel's error is 4.7e-5 too (per
case at most 2.4x PyTorch's; the property test holds it to 4x + 1e-6). Fully masked rows
give exact zeros, as in PyTorch. Verification holds every use to the tolerance grounded in
the original's own float32 error.
The result has the strides PyTorch's kernel gives (transformers views it after a transpose).
Cost: the same two products as the exporter's decomposition; one ReduceMax over the scores
and an Equal/Where on one value per row in place of IsNaN/Where on every score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from fxlower.graph import Builder, arg, node_of
from fxlower.rewrite import Context, Plan, RewritePass, Skip

_SDPA = (F.scaled_dot_product_attention, torch.ops.aten.scaled_dot_product_attention.default)

# ONNX ops of the exporter's decomposition (torchlib aten_scaled_dot_product_attention),
# by mask kind; and of this pass's
_EXPORTER = {
    "none": frozenset({"MatMul", "Mul", "Sqrt", "Softmax", "Transpose", "Reshape"}),
    "float": frozenset({"MatMul", "Mul", "Sqrt", "Softmax", "Transpose", "Reshape", "Add"}),
    "bool": frozenset({"MatMul", "Mul", "Sqrt", "Softmax", "Transpose", "Reshape", "Add",
                       "Where", "IsNaN"}),
}
_CAUSAL_EXPORTER = _EXPORTER["float"] | {"Trilu", "Where", "ConstantOfShape"}
_OURS = frozenset({"MatMul", "Transpose", "Mul", "Softmax", "ReduceMax", "Equal", "Where"})


@dataclass(frozen=True)
class Attention:
    node: fx.Node
    q: fx.node.Argument
    k: fx.node.Argument
    v: fx.node.Argument
    mask: fx.node.Argument
    dropout_p: object
    is_causal: object
    scale: object
    enable_gqa: object


@dataclass(frozen=True, kw_only=True)
class AttentionPlan(Plan):
    q: fx.Node
    k: fx.Node
    v: fx.Node
    mask: fx.Node | None
    mask_bool: bool
    causal: tuple[int, int] | None  # (L, S) of a causal mask
    scale: float
    dtype: torch.dtype
    layout: tuple[int, ...]  # the dims of PyTorch's output in memory order (outermost first)


@dataclass(frozen=True, kw_only=True)
class NoMaskPlan(Plan):
    node: fx.Node  # the call, re-issued without its mask


def _bind(node: fx.Node) -> Attention | None:
    if node.op != "call_function" or node.target not in _SDPA:
        return None
    return Attention(node, arg(node, 0, "query"), arg(node, 1, "key"), arg(node, 2, "value"),
                     arg(node, 3, "attn_mask"), arg(node, 4, "dropout_p", 0.0),
                     arg(node, 5, "is_causal", False), node.kwargs.get("scale"),
                     node.kwargs.get("enable_gqa", False))


def _exporter_ops(m: Attention, ctx: Context) -> frozenset[str]:
    """The ONNX ops the exporter's own decomposition of this call writes."""
    if m.is_causal is True:
        return _CAUSAL_EXPORTER
    if m.mask is None:
        return _EXPORTER["none"]
    s = ctx.spec(m.mask)
    return _EXPORTER["bool" if s is not None and s.dtype == torch.bool else "float"]


def _layout(node: fx.Node) -> tuple[int, ...]:
    """The dims of the op's output in memory order. PyTorch's CPU kernels return [B, H, L, E]
    laid out as [B, L, H, E], and models rely on it (transformers' `.transpose(1, 2).view(...)`
    after an export trace that dropped the `.contiguous()` as a no-op), so the replacement
    gives its result the same strides."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return ()
    strides = val.stride()
    return tuple(sorted(range(val.dim()), key=lambda d: (-strides[d], d)))


class AttentionToMatmulSoftmax(RewritePass[Attention, "AttentionPlan | NoMaskPlan"]):
    name = "attention_to_matmul_softmax"

    def match(self, node: fx.Node, ctx: Context) -> Attention | None:
        target = ctx.options.target
        m = _bind(node)
        if m is None or target is None:
            return None
        if not target.forbidden_in(_exporter_ops(m, ctx)):  # 1.
            return None
        return m

    def check(self, m: Attention, ctx: Context) -> AttentionPlan | NoMaskPlan | Skip:
        target = ctx.options.target
        assert target is not None
        if (isinstance(m.mask, fx.Node) and ctx.is_const(m.mask)  # 0.
                and getattr(ctx.spec(m.mask), "dtype", None) == torch.bool
                and bool(ctx.value(m.mask).all())):
            return NoMaskPlan(detail="a constant all-true boolean mask dropped: the call as the "
                                     "exporter writes it without a mask (bit-exact)",
                              node=m.node)
        need = _OURS | ({"Add"} if m.mask is not None or m.is_causal is True else set())
        lack = sorted(target.forbidden_in(need))
        if lack:  # 2.
            return Skip(f"target '{target.name}' lacks {', '.join(lack)}, which attention "
                        "needs in any formulation")
        q, k, v = m.q, m.k, m.v
        if not (isinstance(q, fx.Node) and isinstance(k, fx.Node) and isinstance(v, fx.Node)):
            return Skip("q, k or v is not a tensor of the graph")
        specs = [ctx.spec(t) for t in (q, k, v)]
        if any(s is None for s in specs):  # 3.
            return Skip("the shapes of q, k, v are not known when lowering")
        sq, sk, _ = (s for s in specs if s is not None)
        if any(s is not None and s.dtype not in (torch.float32, torch.float64) for s in specs):
            return Skip(f"a {sq.dtype} attention: PyTorch accumulates half precision in float32")
        mask: fx.Node | None = None
        if m.mask is not None:
            ms = ctx.spec(m.mask)
            if not isinstance(m.mask, fx.Node) or ms is None:
                return Skip("the mask's dtype is not known when lowering")
            if ms.dtype not in (torch.bool, sq.dtype):
                return Skip(f"a {ms.dtype} mask on {sq.dtype} scores")
            mask = m.mask
        if not (isinstance(m.dropout_p, (int, float)) and float(m.dropout_p) == 0.0):  # 4.
            return Skip(f"dropout_p={m.dropout_p!r}: attention dropout is random")
        if m.enable_gqa not in (False, None):
            return Skip("grouped-query attention (enable_gqa) is not decomposed here")
        if m.is_causal not in (False, True):
            return Skip("is_causal is computed at run time")
        if m.is_causal and mask is not None:
            return Skip("is_causal with an explicit mask (PyTorch raises)")
        if m.scale is not None and not isinstance(m.scale, (int, float)):
            return Skip("the scale is computed at run time")
        scale = 1.0 / math.sqrt(sq.shape[-1]) if m.scale is None else float(m.scale)
        causal = (sq.shape[-2], sk.shape[-2]) if m.is_causal else None
        mask_bool = mask is not None and getattr(ctx.spec(mask), "dtype", None) == torch.bool
        kind = "causal" if causal else ("boolean" if mask_bool else
                                        "float" if mask is not None else "no")
        lacked = sorted(target.forbidden_in(_exporter_ops(m, ctx)))
        return AttentionPlan(
            detail=f"MatMul/Softmax/MatMul with {kind} mask, safe-softmax rows by ReduceMax/"
                   f"Equal/Where (the exporter's form needs {', '.join(lacked)}; "
                   "rounding-level, not bit-exact)",
            q=q, k=k, v=v, mask=mask, mask_bool=mask_bool, causal=causal, scale=scale,
            dtype=sq.dtype, layout=_layout(m.node))

    def replace(self, plan: AttentionPlan | NoMaskPlan, b: Builder) -> fx.Node:
        if isinstance(plan, NoMaskPlan):
            n = plan.node
            args = tuple(None if i == 3 else a for i, a in enumerate(n.args))
            kwargs = {k: v for k, v in n.kwargs.items() if k != "attn_mask"}
            return b.graph.call_function(n.target, args, kwargs)  # type: ignore[arg-type]
        q, k, v = b.proxy(plan.q), b.proxy(plan.k), b.proxy(plan.v)
        # the scale as a tensor of q's dtype: a Python float in the graph is exported as a
        # float32 scalar, which rounds a float64 model's scale (6e-8 off in onnxruntime)
        scale = b.const(torch.tensor(plan.scale, dtype=plan.dtype), "attention_scale")
        x: Any = (q @ k.transpose(-2, -1)) * scale
        if plan.causal is not None:
            keep = torch.ones(plan.causal, dtype=torch.bool).tril()
            bias = torch.zeros(plan.causal, dtype=plan.dtype).masked_fill(~keep, -math.inf)
            x = x + b.const(bias, "causal_bias")
        elif plan.mask is not None:
            mask = b.proxy(plan.mask)
            x = x + (torch.where(mask, 0.0, -math.inf) if plan.mask_bool else mask)
        w = torch.softmax(x, -1)
        w = torch.where(x.amax(-1, keepdim=True) == -math.inf, 0.0, w)
        out = w @ v
        order = plan.layout
        if order and order != tuple(range(len(order))):  # PyTorch's strides (see _layout)
            back = tuple(order.index(d) for d in range(len(order)))
            out = out.permute(*order).contiguous().permute(*back)
        return node_of(out)
