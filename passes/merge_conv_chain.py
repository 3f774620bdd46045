"""merge_conv_chain: a chain of convolutions with nothing between them becomes one conv.

Covers `nn.Conv1d/2d/3d`, `F.conv1d/2d/3d` with constant weights, `aten.conv*d` and
`aten.convolution` (torch.export), in any mix (see `fxlower.kernels.linear`). BatchNorm between
them is folded first by fold_bn_into_conv. The merged layer is a new `nn.Conv*d` submodule
named after the layers it replaces (`conv1__conv2`).

Algebra (`kernels.linear.compose_geom`, `compose_weights`), per spatial dim, for `b(a(x))`:
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

import torch

from fxlower.rewrite import Context, Skip

from ._common import Chain, ChainMerge, MergePlan


class MergeConvChain(ChainMerge):
    name = "merge_conv_chain"
    families = ("conv1d", "conv2d", "conv3d")
    noun = "conv"

    def check(self, m: Chain, ctx: Context) -> MergePlan | Skip:
        plan = super().check(m, ctx)
        if isinstance(plan, MergePlan) and plan.module.weight.dtype == torch.bfloat16:
            return Skip("bfloat16: PyTorch's CPU bfloat16 convolution (oneDNN, torch 2.13) "
                        "computes some merged kernel shapes wrongly (reads uninitialised "
                        "memory), so conv chains are merged in float32/float16/float64 only")
        return plan
