"""Helpers that more than one pass needs (passes never import each other).

Constant folding of constant lookups: a gather whose source and index are both known when
lowering (a relative-position-bias table indexed by a constant index buffer, a position
embedding looked up by fixed ids) needs nothing at run time. Its value is computed once,
by the original op itself on the real tensors (so bit-exact by construction), and stored
as one constant: K*R elements for K looked-up rows of R values, where the precomputed
one-hot the constant-index formulation would otherwise store holds K*N (N table rows) and
a product costs K*N*R multiply-adds per call.

Legality (each a reason the pass keeps its other formulation):
1. the lookup's value cannot depend on the inputs (parameters, buffers, literals and
   deterministic ops on them only);
2. no gradient has to reach a parameter through it: the model is in eval mode, or no
   parameter it reads requires grad (in training mode the table must keep learning, so
   the one-hot product stays);
3. the folded constant holds no more elements than the one-hot matrix it replaces.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from fxlower.graph import Builder, get_attr, is_param_or_buffer, node_of
from fxlower.rewrite import Context, Plan

FOLDED = "folded"  # Plan.data key of the folded value
MAX_RUNS = 16  # a constant index with at most this many constant-step runs becomes slices


def known_finite(node: fx.node.Argument, ctx: Context) -> bool:
    """True when the source cannot hold NaN/inf/-0.0 worth a code path: not a float, the
    user said so, or a parameter/buffer whose values are all finite and not -0.0 now."""
    s = ctx.spec(node)
    if s is None or not s.dtype.is_floating_point or ctx.options.assume_finite:
        return True
    if is_param_or_buffer(ctx.gm, node):
        v = ctx.value(node).detach()
        return bool(torch.isfinite(v).all()) and not bool(((v == 0) & torch.signbit(v)).any())
    return False


def _needs_grad(node: fx.Node, ctx: Context) -> bool:
    """Condition 2: a training-mode model reads a parameter that requires grad."""
    if not ctx.gm.training:
        return False
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "get_attr":
            v = get_attr(ctx.gm, str(n.target))
            if isinstance(v, torch.nn.Parameter) and v.requires_grad:
                return True
        stack.extend(n.all_input_nodes)
    return False


def fold_lookup(node: fx.Node, ctx: Context, onehot_elems: int) -> Plan | None:
    """A plan that stores the lookup's value as one constant, or None when one of the
    legality conditions above fails (the caller then keeps its precomputed one-hot)."""
    if not ctx.is_const(node) or _needs_grad(node, ctx):
        return None
    value = ctx.value(node)
    if not isinstance(value, torch.Tensor) or value.numel() > onehot_elems:
        return None
    return Plan(detail=f"constant lookup of a constant source: folded into one constant of "
                       f"{value.numel():,} values (no one-hot of {onehot_elems:,})",
                data={FOLDED: value.detach().clone()})


def replace_folded(node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
    """The folded constant, in place of the lookup."""
    return node_of(b.const(plan.data[FOLDED], f"folded_{node.name}"))
