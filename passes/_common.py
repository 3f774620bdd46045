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

from fxlower.graph import Builder, get_attr, is_param_or_buffer, node_of, op_name
from fxlower.kernels import linear as lo
from fxlower.kernels import scatter as so
from fxlower.rewrite import Context, Plan, RewritePass, Skip

MAX_RUNS = 16  # a constant index with at most this many constant-step runs becomes slices


def known_finite(node: fx.node.Argument, ctx: Context) -> bool:
    """True when the source cannot hold NaN/inf/-0.0 worth a code path: not a float, the
    user said so, or proven (`finite_proof`)."""
    return finiteness(node, ctx)[0]


def finiteness(node: fx.node.Argument, ctx: Context) -> tuple[bool, str]:
    """`known_finite`, and what a rewrite's report detail says of it: the code path kept,
    or the proof that made it unnecessary ("" for integer sources and under assume_finite).
    One proof serves both."""
    s = ctx.spec(node)
    if s is None or not s.dtype.is_floating_point or ctx.options.assume_finite:
        return True, ""
    why = finite_proof(node, ctx)
    return bool(why), f" (source proven finite: {why})" if why else " + non-finite code path"


def finite_proof(node: fx.node.Argument, ctx: Context) -> str:
    """Why a float tensor holds no NaN, +-inf or -0.0 whatever the model's inputs are, or ""
    when that is not shown. Proven by construction, through the graph: constants and
    parameters checked when lowering (a later change of the weights is not seen); integers
    and comparisons cast to a float whose range holds them; sigmoid, tanh and softmax of a
    proven tensor of the same dtype; data movement (never a reinterpreting view(dtype)),
    `where`, clamp with clean bounds, and sums and differences whose bounds cannot overflow.
    Every operand must have the result's dtype (no promotion) and every literal must be
    clean once converted to it (1e10 is inf in float16, -1e-46 is -0.0 in float32). Products
    and quotients are never proven (a product with +0.0 of a negative number is -0.0)."""
    found = _bound(node, ctx, {})
    return "" if found is None else found[1]


# ops that move or pick values without computing new ones
_MOVES = frozenset({
    "reshape", "view", "_unsafe_view", "permute", "transpose", "t", "expand", "expand_as",
    "contiguous", "clone", "squeeze", "unsqueeze", "flatten", "slice", "select", "narrow",
    "cat", "stack", "repeat", "alias", "detach", "index", "gather", "index_select", "flip",
    "roll", "movedim", "getitem", "lift_fresh_copy",
})
_CASTS = frozenset({"to", "_to_copy", "type_as", "float", "double", "half", "bfloat16"})
# float dtype -> the float dtypes that widen into it exactly (no rounding, no -0.0 from tiny)
_WIDER = {torch.float32: (torch.float32, torch.float16, torch.bfloat16),
          torch.float64: (torch.float64, torch.float32, torch.float16, torch.bfloat16),
          torch.float16: (torch.float16,), torch.bfloat16: (torch.bfloat16,)}
_UNIT = {"sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax", "_softmax": "softmax",
         "_safe_softmax": "softmax"}


def _literal_bound(v: object, dtype: torch.dtype) -> tuple[float, str] | None:
    """A Python number as an op computing in `dtype` sees it (converted: 1e10 is inf in
    float16, -1e-46 is -0.0 in float32): its bound, or None when that is not clean."""
    if not isinstance(v, (bool, int, float)):
        return None
    t = torch.tensor(float(v), dtype=dtype)
    if not bool(torch.isfinite(t)) or (float(t) == 0 and bool(torch.signbit(t))):
        return None
    return abs(float(t)), "a literal"


def _bound(node: object, ctx: Context, memo: dict[fx.Node, tuple[float, str] | None]
           ) -> tuple[float, str] | None:
    """(max |value|, reason) when the tensor `node` provably holds no NaN, +-inf or -0.0."""
    if not isinstance(node, fx.Node):
        return None
    if node in memo:
        return memo[node]
    memo[node] = None  # (a cycle cannot occur in a DAG; this also bounds the recursion)
    found = _bound_of(node, ctx, memo)
    memo[node] = found
    return found


def _operand(v: object, dtype: torch.dtype, ctx: Context,
             memo: dict[fx.Node, tuple[float, str] | None]) -> tuple[float, str] | None:
    """The bound of an operand of an op that computes in `dtype`: a tensor of exactly that
    dtype (no promotion: int32 70000 would be inf in float16), or a literal converted."""
    if isinstance(v, fx.Node):
        sv = ctx.spec(v)
        return _bound(v, ctx, memo) if sv is not None and sv.dtype == dtype else None
    return _literal_bound(v, dtype)


def _bound_of(node: fx.Node, ctx: Context, memo: dict[fx.Node, tuple[float, str] | None]
              ) -> tuple[float, str] | None:
    s = ctx.spec(node)
    if s is None:
        return None
    if s.dtype == torch.bool:
        return 1.0, "a comparison"
    if not s.dtype.is_floating_point:
        return float(torch.iinfo(s.dtype).max), "integers"
    if is_param_or_buffer(ctx.gm, node) or ctx.is_const(node):
        v = ctx.value(node)
        if not isinstance(v, torch.Tensor) or v.dtype != s.dtype:
            return None
        v = v.detach()
        if not bool(torch.isfinite(v).all()) or bool(((v == 0) & torch.signbit(v)).any()):
            return None
        return float(v.abs().max()) if v.numel() else 0.0, "a constant checked when lowering"
    if node.op not in ("call_function", "call_method"):
        return None
    name = op_name(node)
    args, dt = node.args, s.dtype
    if any(isinstance(a, torch.dtype) for a in (*args, *node.kwargs.values())) and (
            name not in _CASTS):
        return None  # view(dtype) reinterprets bits; softmax(dtype=) casts first
    limit = float(torch.finfo(dt).max)
    if name in _UNIT and args:
        inner = _operand(args[0], dt, ctx, memo)
        return None if inner is None else (1.0, _UNIT[name])
    if name in _CASTS and args and isinstance(args[0], fx.Node):
        inner = _bound(args[0], ctx, memo)
        src = ctx.spec(args[0])
        if inner is None or inner[0] > limit or src is None:
            return None
        if src.dtype.is_floating_point and src.dtype not in _WIDER.get(dt, ()):
            return None  # a narrowing cast rounds tiny negatives to -0.0
        return inner[0], inner[1] if inner[1] not in ("integers", "a comparison") else (
            f"{inner[1]} cast to {str(dt).removeprefix('torch.')}")
    if name == "where":  # torch.where(cond, a, b); the method x.where(cond, y)
        values = (args[0], args[2]) if node.op == "call_method" else args[1:3]
    elif name in ("cat", "stack"):
        values = tuple(args[0]) if args and isinstance(args[0], (list, tuple)) else ()
    elif name in _MOVES or name in ("clamp", "clip"):
        values = args[:1]
    elif name in ("add", "sub") and not node.kwargs:  # (alpha= scales the second operand)
        values = args[:2]
    else:
        return None
    parts = [_operand(v, dt, ctx, memo) for v in values]
    if len(values) == 0 or any(p is None for p in parts):
        return None
    found = [p for p in parts if p is not None]
    reason = next((r for _, r in found if r != "a literal"), found[0][1])
    if name in ("clamp", "clip"):
        limits = [*args[1:], *node.kwargs.values()]
        bounds = [_literal_bound(b, dt) for b in limits if b is not None]
        if len(bounds) != sum(b is not None for b in limits) or any(b is None for b in bounds):
            return None  # a tensor bound, or one that is not clean in the dtype
        return max([found[0][0]] + [b[0] for b in bounds if b is not None]), reason
    if name in ("add", "sub"):
        total = sum(b for b, _ in found)
        return None if total > limit / 2 else (total, reason)
    return max(b for b, _ in found), reason


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
