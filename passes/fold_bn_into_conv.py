"""fold_bn_into_conv: an eval-mode BatchNorm right after a conv or linear layer is folded
into that layer's weight and bias.

Covers `nn.BatchNorm1d/2d/3d`, `F.batch_norm`, `torch.batch_norm`, `aten.batch_norm` and
the decomposed `aten._native_batch_norm_legit_no_training` (+ getitem 0) after any conv /
linear spelling (`nn.Conv*d`, `nn.Linear`, `F.conv*d`, `F.linear`, `aten.conv*d`,
`aten.convolution`, `aten.linear`; see `fxlower.kernels.linear`). The result is one new
`nn.Conv*d` / `nn.Linear` submodule named after both (`conv1__bn1`), which
merge_conv_chain / merge_linear_chain can then merge further.

Algebra: eval BN is a per-channel affine map y = x*s + t with s = gamma/sqrt(var + eps),
t = beta - mean*s. Applied after a layer with weight W (out channels first) and bias b:
    W' = W * s[:, None, ...],   b' = b*s + t.
BN acts after the layer's own padding, so every padding_mode, stride, dilation and group
structure is kept as it is.

Legality (each a skip reason):
1. the BN normalises with fixed statistics: eval mode (module.training False,
   training=False, or the `_no_training` ATen op) and running statistics present
   (track_running_stats=True); training-mode BN is refused;
2. the layer's output has exactly one user, the BN (else the un-normalised tensor is still
   needed);
3. the layer's weight and bias, and the BN's statistics and affine parameters, are
   constants; the BN has as many channels as the layer has outputs;
4. BN normalises dim 1: after a conv that is the channel dim (batched input); after a
   linear layer it is the feature dim only for a 2-D output, which needs known shapes.

Not covered: BN *before* a layer (folding it into the next layer's input side is exact only
without zero padding); SyncBatchNorm and subclasses with their own forward.

Numerics: s, t and the folded weights are computed in float64 and rounded once to the
weight dtype. Cost: removes the BN's per-element multiply-add; adds nothing.
merge="never" disables this pass together with the chain merges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from fxlower.graph import Builder
from fxlower.kernels import linear as lo
from fxlower.rewrite import Context, Plan, RewritePass, Skip

_LAYERS = ("conv1d", "conv2d", "conv3d", "linear")


@dataclass(frozen=True)
class BnAfterLayer:
    """A batch norm whose input is a conv or linear node."""

    node: fx.Node
    layer: fx.Node  # the node the BN normalises (lo.data_input), a conv / linear spelling


@dataclass(frozen=True, kw_only=True)
class FoldPlan(Plan):
    module: torch.nn.Module  # the layer with the BN folded in, weights formed in float64
    x: fx.Node  # the layer's input
    base: str  # the new layer's name
    layer: fx.Node  # the layer's node, removed
    out: fx.Node  # the node producing the normalised tensor, whose users move to the new layer


class FoldBnIntoConv(RewritePass[BnAfterLayer, FoldPlan]):
    name = "fold_bn_into_conv"

    def match(self, node: fx.Node, ctx: Context) -> BnAfterLayer | None:
        if ctx.options.merge == "never" or lo.family(node) != "bn":
            return None
        x = lo.data_input(node)
        if lo.family(x) not in _LAYERS:  # (family is None for a non-node)
            return None
        return BnAfterLayer(node, x)

    def check(self, m: BnAfterLayer, ctx: Context) -> FoldPlan | Skip:
        bn = lo.norm(m.node)
        if isinstance(bn, str):  # 3. for the BN's tensors (or the node is no usable BN)
            return Skip(bn)
        if bn.mean is None or bn.var is None:  # 1.
            return Skip(f"'{bn.name}' keeps no running statistics (track_running_stats="
                        "False): it normalises with each batch's statistics")
        if bn.training or bn.batch_stats:  # 1.
            return Skip(f"'{bn.name}' is a BatchNorm in training mode: it normalises with "
                        "each batch's statistics, not a fixed affine map")
        lay = lo.layer(m.layer)
        if isinstance(lay, str):  # 3. for the layer's weight and bias (or no usable layer)
            return Skip(lay)
        if len(lay.node.users) != 1:  # 2.
            others = sorted(f"'{u.name}'" for u in lay.node.users if u is not m.node)
            return Skip(f"the output of '{lay.name}' is also used by {', '.join(others)}: "
                        "folding would change what they see")
        if bn.out is None:
            return Skip(f"the normalised output of '{bn.name}' is not used")
        if bn.out is not m.node and set(m.node.users) != {bn.out}:
            return Skip(f"other outputs of '{bn.name}' (batch statistics) are used")
        assert bn.mean is not None
        if bn.mean.numel() != lay.cout:  # 3.
            return Skip(f"'{bn.name}' has {bn.mean.numel()} channels and '{lay.name}' "
                        f"{lay.cout} outputs")
        s = ctx.spec(lay.node)
        if lay.kind == "linear":  # 4.
            if s is None:
                return Skip(f"shapes unknown: '{bn.name}' normalises the features of "
                            f"'{lay.name}' only for a 2-D output; pass example_inputs")
            if s.rank != 2:
                return Skip(f"'{bn.name}' normalises dim 1 of the {s.rank}-D output of "
                            f"'{lay.name}', not its features")
        elif s is not None and s.rank != lay.dims + 2:  # 4.
            return Skip(f"'{lay.name}' runs on an unbatched input: '{bn.name}' would not "
                        "normalise its channels")
        scale, shift = bn.scale_shift()
        w = lay.weight.double() * scale.view(-1, *([1] * (lay.weight.dim() - 1)))
        b = shift if lay.bias is None else lay.bias.double() * scale + shift
        geom = lay.geom()
        module = lo.make_module(geom, w, b)
        base = f"{lay.name}__{bn.name}"
        saved = f", {s.numel:,} fewer multiply-adds per call" if s is not None else ""
        detail = (f"folded {bn.spelling} '{bn.name}' into {lay.spelling} '{lay.name}' as "
                  f"'{base}' ({geom.describe()}): per-channel scale and shift{saved}")
        return FoldPlan(detail=detail, module=module, x=lay.x, base=base, layer=lay.node,
                        out=bn.out)

    def replace(self, plan: FoldPlan, b: Builder) -> fx.Node:
        return lo.install(b.gm, b.anchor, plan.x, plan.base, plan.module, [plan.layer],
                          plan.out)
