"""merge_linear_chain: a chain of linear layers with nothing between them becomes one.

Covers `nn.Linear`, `F.linear` with constant weights and `aten.linear` (torch.export), in any
mix (see `fxlower.kernels.linear`); BatchNorm1d between them is folded first by
fold_bn_into_conv. The merged layer is a new `nn.Linear` named after the layers it replaces
(`fc1__fc2`).

Algebra: `b(a(x)) = x W_a^T W_b^T + (W_b b_a + b_b)`, so W = W_b W_a, bias = W_b b_a + b_b
(a linear layer is a conv without spatial dims; `kernels.linear.compose_weights`).

Legality (each a skip reason):
1. the intermediate tensor has exactly one user, the next linear layer;
2. both weights (and biases) are constants with the same dtype;
3. cost (merge="auto"): the chain is split into runs so that the multiply-adds at the real
   shapes are fewest, preferring fewer layers on ties. A pair `in -> mid -> out` merges when
   in*out <= mid*(in + out): a narrowing middle such as 64 -> 48 -> 32 merges, a low-rank
   bottleneck such as 256 -> 16 -> 256 (8,192 vs 65,536 per row) is left alone, with both
   counts in the report. merge="always" merges regardless; merge="never" leaves them.
There is no padding, so every pair is exact.

Numerics: the product is formed in float64 and rounded once to the weight dtype.
Cost: rows*in*out multiply-adds for the merged layer, never more than the chain under
merge="auto".
"""

from __future__ import annotations

from ._common import ChainMerge


class MergeLinearChain(ChainMerge):
    name = "merge_linear_chain"
    families = ("linear",)
    noun = "linear layer"
