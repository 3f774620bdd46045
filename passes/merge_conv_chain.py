"""merge_conv_chain: a chain of convolutions with nothing between them becomes one conv.

Covers `nn.Conv1d/2d/3d`, `F.conv1d/2d/3d` with constant weights, `aten.conv*d` and
`aten.convolution` (torch.export), in any mix (see `fxlower.linear_ops`). BatchNorm between
them is folded first by fold_bn_into_conv. The merged layer is a new `nn.Conv*d` submodule
named after the layers it replaces (`conv1__conv2`).

Algebra (`linear_ops.compose_geom`, `compose_weights`), per spatial dim, for `b(a(x))`:
    stride s_a*s_b; dilation D = gcd(s_a*d_b, d_a); kernel (s_a*d_b/D)*(k_b-1) + (d_a/D)*(k_a-1) + 1
    (k_b dilated by s_a); padding s_a*p_b + p_a; groups gcd(g_a, g_b) (depthwise -> pointwise
    becomes dense, depthwise -> depthwise stays depthwise);
    W = full correlation of W_a with W_b (Stack Overflow 58357815), bias b_b + sum W_b * b_a.

Legality (each a skip reason):
1. the intermediate tensor has exactly one user, the next conv (else merging keeps it);
2. both weights (and biases) are constants, neither conv is transposed, `padding='same'`
   pads symmetrically, both have the same weight dtype;
3. zero padding: when `b` has padding 0 the merge is exact (the merged conv keeps `a`'s
   padding and padding_mode). When `b` pads (p_b > 0) the merged conv computes `a` where
   `b` saw zeros, so it must be zero there for every input:
   3a. `b` pads with zeros (padding_mode='zeros');
   3b. `a` has no bias (or an all-zero one);
   3c. `a` pads with zeros (or not at all);
   3d. every tap of `a` at those positions reads padding: p_a >= d_a*(k_a-1) - s_a + 1
       (left; with stride 1: p_a >= d_a*(k_a-1), e.g. 1x1 convs or the "full" convs of the
       Stack Overflow example) and s_a*L_a - p_a >= L (right, with static sizes; without
       them p_a >= d_a*(k_a-1));
4. cost (merge="auto"): the chain is split into runs so that the total multiply-adds at the
   real shapes is smallest, preferring fewer layers on ties; a pair is left apart when its
   merged conv would cost more (depthwise 3x3 -> pointwise 1x1, low-rank pairs) and the
   report gives both counts. merge="always" merges every legal run whatever the cost;
   merge="never" leaves convs alone. Without shapes the counts are per output position.
5. not in bfloat16 (any merge setting): PyTorch 2.13's CPU bfloat16 convolution (oneDNN)
   computes some merged shapes wrongly, e.g. a (7, 3) kernel with stride (1, 2) over a
   7x3 input (tests/regressions/test_fuzz_conv_bf16_merged_conv.py); BN folds stay.

Chains of three or more are planned as a whole (the best split into merged runs), so a
triple that is cheaper merged is merged even when its first pair alone would not be. One
report row per merged run, at its last conv; one skip row per link left apart.

Not covered: a padded, biased pair is refused rather than merged with a precomputed
border-correction map; torch.export writes padding_mode != 'zeros' as an `aten.pad` before a
conv with padding 0, so there the pad stands between the convs and the pair is no
candidate; transposed convs, conv -> flatten -> linear and BN *before* a conv are not merged.

Numerics: composed in float64 and rounded once to the weight dtype; the merged conv equals
the chain exactly in real arithmetic, to float64 rounding in float64, and within fp32
rounding of a different summation order in float32.
Cost: the merged conv's multiply-adds (reported against the chain's); never more under
merge="auto".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
import torch.fx as fx

from fxlower import linear_ops as lo
from fxlower.graph import Builder
from fxlower.rewrite import Context, Plan, RewritePass, Skip


@dataclass
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


class ChainMerge(RewritePass):
    """Shared by merge_conv_chain and merge_linear_chain."""

    families: ClassVar[tuple[str, ...]] = ()
    noun: ClassVar[str] = ""

    def match(self, node: fx.Node, ctx: Context) -> bool:
        if ctx.options.merge == "never":
            return False
        fam = lo.family(node)
        if fam not in self.families or lo.family(lo.data_input(node)) != fam:
            return False
        return analyse(node, fam, ctx.options.merge, self.noun).kind != "inner"

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        fam = lo.family(node)
        assert fam is not None
        role = analyse(node, fam, ctx.options.merge, self.noun)
        if role.kind != "end":
            return Skip(role.reason)
        run, geoms = role.run, role.geoms
        w, b = run[0].weight.double(), run[0].bias
        b = None if b is None else b.double()
        g = geoms[0]
        for lay, gl in zip(run[1:], geoms[1:], strict=True):
            m = lo.compose_geom(g, gl, "", "")
            assert isinstance(m, lo.Geom)
            w, b = lo.compose_weights(w, b, g, lay.weight, lay.bias, gl, m)
            g = m
        if g.bias_zero:
            b = None
            g = replace(g, has_bias=False)
        module = lo.make_module(g, w, b)
        base = "__".join(lay.name for lay in run)
        w_before = sum(gl.weights for gl in geoms)
        detail = (f"merged {len(run)} {self.noun}s ({', '.join(lay.name for lay in run)}) into "
                  f"'{base}' ({g.describe()}): {w_before:,} -> {g.weights:,} weights, "
                  f"MACs {role.macs_chain:,} -> {role.macs_merged:,} {role.unit}")
        return Plan(detail=detail, macs=max(0, role.macs_merged - role.macs_chain),
                    data={"module": module, "x": run[0].x, "base": base,
                          "nodes": [lay.node for lay in run]})

    def replace(self, node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
        d = plan.data
        return lo.install(b.gm, node, d["x"], d["base"], d["module"], d["nodes"])


class MergeConvChain(ChainMerge):
    name = "merge_conv_chain"
    families = ("conv1d", "conv2d", "conv3d")
    noun = "conv"

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        plan = super().check(node, ctx)
        if isinstance(plan, Plan) and plan.data["module"].weight.dtype == torch.bfloat16:
            return Skip("bfloat16: PyTorch's CPU bfloat16 convolution (oneDNN, torch 2.13) "
                        "computes some merged kernel shapes wrongly (reads uninitialised "
                        "memory), so conv chains are merged in float32/float16/float64 only")
        return plan
