"""Helpers that more than one pass needs (passes never import each other): constant
folding of constant lookups, the broadcast core of an index (gather and scatter), and the
planning of chains of linear layers (merge_conv_chain and merge_linear_chain).

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

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
import torch.fx as fx

from fxlower.graph import Builder, get_attr, is_param_or_buffer, node_of
from fxlower.kernels import linear as lo
from fxlower.kernels import scatter as so
from fxlower.rewrite import Context, Plan, RewritePass, Skip

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


@dataclass(frozen=True, kw_only=True)
class Folded(Plan):
    """The plan of a folded constant lookup: its value, computed by the original op."""

    value: torch.Tensor


def fold_lookup(node: fx.Node, ctx: Context, onehot_elems: int) -> Folded | None:
    """A plan that stores the lookup's value as one constant, or None when one of the
    legality conditions above fails (the caller then keeps its precomputed one-hot)."""
    if not ctx.is_const(node) or _needs_grad(node, ctx):  # 1., 2.
        return None
    value = ctx.value(node)
    if not isinstance(value, torch.Tensor) or value.numel() > onehot_elems:  # 3.
        return None
    return Folded(detail=f"constant lookup of a constant source: folded into one constant of "
                         f"{value.numel():,} values (no one-hot of {onehot_elems:,})",
                  value=value.detach().clone())


def replace_folded(plan: Folded, b: Builder) -> fx.Node:
    """The folded constant, in place of the lookup."""
    return node_of(b.const(plan.value, f"folded_{b.anchor.name}"))


@dataclass(frozen=True, kw_only=True)
class EmptyPlan(Plan):
    """A lookup whose result is empty: an empty slice of the source, of the result's shape
    (gather_to_mask_matmul, index_to_mask_matmul)."""

    x: fx.Node
    shape: tuple[int, ...]  # the (empty) result's


def replace_empty(plan: EmptyPlan, b: Builder) -> fx.Node:
    return node_of(b.proxy(plan.x).reshape(-1)[0:0].reshape(plan.shape))


# ---- the bindings of the scatter passes


@dataclass(frozen=True)
class ScatterCall:
    """A scatter-family op taken apart by `kernels.scatter.scatter_op` (x, the index or
    mask, the values, accumulate, ...): what the four scatter passes' `match` binds."""

    node: fx.Node
    op: so.ScatterOp


# ---- the broadcast core of an index (gather_to_mask_matmul, scatter_to_mask_matmul)

aten = torch.ops.aten
_EXPAND = {aten.expand.default, aten.expand_copy.default, aten.broadcast_to.default,
           torch.broadcast_to, "expand", "expand_as", "broadcast_to"}
_REPEAT = {aten.repeat.default, "repeat"}
# ops that keep an integer index's values and shape (casts between int types, copies)
_SAME_VALUES = {aten._to_copy.default, aten.to.dtype, aten.to.device, aten.to.dtype_layout,
                aten.clone.default, aten.alias.default, aten.detach.default,
                aten.contiguous.default, torch.clone, "to", "clone", "contiguous", "detach",
                "long", "int"}


def _target(n: fx.Node) -> object:
    return n.target


def broadcast_core(idx: fx.Node, ctx: Context) -> tuple[fx.Node, tuple[int, ...]]:
    """Follow idx back through broadcasting ops (and value-keeping casts or copies of an
    integer tensor, like the `.to(x.device)` of ViT-MAE's decoder) to the smallest tensor it
    was expanded from. Returns that node and its shape aligned to idx's rank."""
    si = ctx.spec(idx)
    assert si is not None
    node = idx
    while node.op in ("call_function", "call_method") and _target(node) in (
        _EXPAND | _REPEAT | _SAME_VALUES
    ):
        src = node.args[0]
        ss = ctx.spec(src)
        if _target(node) in _SAME_VALUES:
            if not isinstance(src, fx.Node) or ss is None or ss.dtype.is_floating_point:
                break
            node = src
            continue
        if not isinstance(src, fx.Node) or ss is None or ss.rank > si.rank:
            break
        aligned = (1,) * (si.rank - ss.rank) + ss.shape
        out = ctx.spec(node)
        if out is None:
            break
        if _target(node) in _REPEAT:
            # repeat tiles: only repeats of size-1 dims are broadcasts
            if any(a != 1 and o != a for a, o in zip(aligned, out.shape, strict=True)):
                break
        node = src
    sc = ctx.spec(node)
    assert sc is not None
    return node, (1,) * (si.rank - sc.rank) + sc.shape


# ---- chains of linear layers (merge_conv_chain, merge_linear_chain)


@dataclass(frozen=True)
class _Role:
    kind: str  # "end" (last layer of a merged run), "inner" (merged, not last), "skip"
    reason: str = ""
    run: list[lo.Layer] = field(default_factory=list)
    geoms: list[lo.Geom] = field(default_factory=list)
    merged: lo.Geom | None = None
    macs_chain: int = 0
    macs_merged: int = 0
    unit: str = "per call"


def _collect(node: fx.Node, fam: str) -> tuple[list[lo.Layer], int] | str:
    """The maximal chain through `node` linked by single-user intermediates, and the
    position of `node` in it; or why `node` and its input cannot be chained."""
    ln = lo.layer(node)
    if isinstance(ln, str):
        return ln
    x = ln.x
    if len(x.users) != 1:
        others = sorted(f"'{u.name}'" for u in x.users if u is not node)
        return (f"the output of '{lo.readable(x)}' is also used by {', '.join(others)}: "
                "merging would not remove it")
    lx = lo.layer(x)
    if isinstance(lx, str):
        return lx
    back: list[lo.Layer] = []
    cur = ln
    while True:
        p = cur.x
        if lo.family(p) != fam or len(p.users) != 1:
            break
        lp = lo.layer(p)
        if isinstance(lp, str):
            break
        back.append(lp)
        cur = lp
    fwd: list[lo.Layer] = []
    cur = ln
    while len(cur.node.users) == 1:
        u = next(iter(cur.node.users))
        if lo.family(u) != fam:
            break
        lu = lo.layer(u)
        if isinstance(lu, str) or lu.x is not cur.node:
            break
        fwd.append(lu)
        cur = lu
    return back[::-1] + [ln] + fwd, len(back)


def analyse(node: fx.Node, fam: str, mode: str, noun: str) -> _Role:
    """Plan the chain through `node` (see the module docstring, condition 4) and say what
    `node` is in the plan."""
    got = _collect(node, fam)
    if isinstance(got, str):
        return _Role("skip", got)
    chain, t = got
    names = [lay.name for lay in chain]
    geoms = [lay.geom() for lay in chain]
    unit = "per call"
    if any(gm.positions is None for gm in geoms):
        unit = "per output position (shapes unknown)"
        pos, acc = [1] * len(geoms), 1
        for i in range(len(geoms) - 1, -1, -1):
            pos[i] = acc
            acc *= math.prod(geoms[i].stride) if geoms[i].dims else 1
        geoms = [replace(gm, positions=p) for gm, p in zip(geoms, pos, strict=True)]
    n = len(chain)
    seg: dict[tuple[int, int], lo.Geom | str] = {}
    for i in range(n):
        cur: lo.Geom | str = geoms[i]
        seg[(i, i)] = cur
        for j in range(i + 1, n):
            if isinstance(cur, lo.Geom):
                cur = lo.compose_geom(cur, geoms[j], "__".join(names[i:j]), names[j])
            seg[(i, j)] = cur

    def cost(i: int, j: int) -> int:
        s = seg[(i, j)]
        assert isinstance(s, lo.Geom) and s.positions is not None
        return s.macs(s.positions)

    # best split of chain[:j] into legal runs, as ((macs, runs), split); compared by
    # (macs, runs) under merge="auto" and by (runs, macs) under merge="always"
    def key(o: tuple[tuple[int, int], list[tuple[int, int]]]) -> tuple[int, int]:
        (macs, count), _ = o
        return (count, macs) if mode == "always" else (macs, count)

    best: list[tuple[tuple[int, int], list[tuple[int, int]]]] = [((0, 0), [])]
    for j in range(1, n + 1):
        options = []
        for i in range(j):
            if isinstance(seg[(i, j - 1)], lo.Geom):
                (macs, count), split = best[i]
                options.append(((macs + cost(i, j - 1), count + 1), split + [(i, j - 1)]))
        best.append(min(options, key=key))
    runs = best[n][1]
    start, end = next((i, j) for i, j in runs if i <= t <= j)
    if start < t:
        if t < end:
            return _Role("inner")
        run = chain[start:end + 1]
        merged = seg[(start, end)]
        assert isinstance(merged, lo.Geom)
        before = sum(cost(k, k) for k in range(start, end + 1))
        return _Role("end", run=run, geoms=geoms[start:end + 1], merged=merged,
                     macs_chain=before, macs_merged=cost(start, end), unit=unit)
    # `node` starts a run: the link from the previous run was left apart
    p0 = next(i for i, j in runs if j == t - 1)
    union = seg[(p0, end)]
    left, right = "__".join(names[p0:t]), "__".join(names[t:end + 1])
    if isinstance(union, str):
        return _Role("skip", union)
    apart = cost(p0, t - 1) + cost(t, end)
    return _Role("skip", (
        f"merging '{left}' and '{right}' into one {noun} would cost {cost(p0, end):,} "
        f"multiply-adds {unit} instead of {apart:,}: left apart (merge='always' merges it)"))


@dataclass(frozen=True)
class Chain:
    """A layer whose input is a layer of its family, and its role in the chain's plan."""

    node: fx.Node
    role: _Role


@dataclass(frozen=True, kw_only=True)
class MergePlan(Plan):
    module: torch.nn.Module  # the merged layer, weights formed in float64
    x: fx.Node  # the input of the run's first layer
    base: str  # the merged layer's name
    nodes: tuple[fx.Node, ...]  # the run's layers, first to last


class ChainMerge(RewritePass[Chain, MergePlan]):
    """Shared by merge_conv_chain and merge_linear_chain."""

    families: ClassVar[tuple[str, ...]] = ()
    noun: ClassVar[str] = ""

    def match(self, node: fx.Node, ctx: Context) -> Chain | None:
        if ctx.options.merge == "never":
            return None
        fam = lo.family(node)
        if fam not in self.families or lo.family(lo.data_input(node)) != fam:
            return None
        role = analyse(node, fam, ctx.options.merge, self.noun)
        return None if role.kind == "inner" else Chain(node, role)

    def check(self, m: Chain, ctx: Context) -> MergePlan | Skip:
        role = m.role
        if role.kind != "end":
            return Skip(role.reason)
        run, geoms = role.run, role.geoms
        w, b = run[0].weight.double(), run[0].bias
        b = None if b is None else b.double()
        g = geoms[0]
        for lay, gl in zip(run[1:], geoms[1:], strict=True):
            merged = lo.compose_geom(g, gl, "", "")
            assert isinstance(merged, lo.Geom)
            w, b = lo.compose_weights(w, b, g, lay.weight, lay.bias, gl, merged)
            g = merged
        if g.bias_zero:
            b = None
            g = replace(g, has_bias=False)
        module = lo.make_module(g, w, b)
        base = "__".join(lay.name for lay in run)
        w_before = sum(gl.weights for gl in geoms)
        detail = (f"merged {len(run)} {self.noun}s ({', '.join(lay.name for lay in run)}) into "
                  f"'{base}' ({g.describe()}): {w_before:,} -> {g.weights:,} weights, "
                  f"MACs {role.macs_chain:,} -> {role.macs_merged:,} {role.unit}")
        return MergePlan(detail=detail, macs=max(0, role.macs_merged - role.macs_chain),
                         module=module, x=run[0].x, base=base,
                         nodes=tuple(lay.node for lay in run))

    def replace(self, plan: MergePlan, b: Builder) -> fx.Node:
        return lo.install(b.gm, b.anchor, plan.x, plan.base, plan.module, list(plan.nodes))


# ---- the plan of an accumulating scatter (scatter_to_mask_matmul, index_put_to_mask_matmul)


def sum_cost(dtype: torch.dtype, k: int, where: str, macs: int, v_finite: bool
             ) -> tuple[str, int]:
    """The report's detail and the multiply-adds of an accumulating scatter (scatter_add,
    index_put(accumulate=True), ...): `macs` multiply-adds for one one-hot product of `k`
    writers laid out as `where` says."""
    if not dtype.is_floating_point:
        detail = f"sum: one-hot matmul in the integer dtype (exact), {where}"
    elif k <= so.MAX_UNROLL:
        detail = f"sum in index order, unrolled over {k} writers (bit-exact), {where}"
    else:
        detail = (f"sum: one-hot matmul of {k} writers, {where}; within float rounding, "
                  "not bit-exact (summation order differs from PyTorch's)")
        if not v_finite:  # NaN / +inf / -inf counts: a matmul 3x as wide
            macs *= 4
    return detail, macs
