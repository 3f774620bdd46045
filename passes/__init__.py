"""The rewrite passes, in run order. A new rewrite adds one file here and one line below."""

from __future__ import annotations

from fxlower.rewrite import AnyPass

from .adaptive_pool_to_mean import AdaptivePoolToMean
from .attention_to_matmul_softmax import AttentionToMatmulSoftmax
from .cumsum_to_matmul import CumsumToMatmul
from .expand_to_concat import ExpandToConcat
from .fold_bn_into_conv import FoldBnIntoConv
from .gather_to_mask_matmul import GatherToMaskMatmul
from .gelu_to_erf import GeluToErf
from .index_put_to_mask_matmul import IndexPutToMaskMatmul
from .index_to_mask_matmul import IndexToMaskMatmul
from .layer_norm_to_reductions import LayerNormToReductions
from .logical_to_arithmetic import LogicalToArithmetic
from .masked_scatter_to_mask_matmul import MaskedScatterToMaskMatmul
from .merge_conv_chain import MergeConvChain
from .merge_linear_chain import MergeLinearChain
from .scatter_to_mask_matmul import ScatterToMaskMatmul
from .select_to_slice import SelectToSlice
from .slice_scatter_to_concat import SliceScatterToConcat
from .topk_gather_to_values import TopkGatherToValues
from .unary_to_arithmetic import UnaryToArithmetic

# Run order: merges of linear layers; the model's own ops a target lacks (layer norm, GELU,
# logical ops, cumulative sums, Neg/Reciprocal, Expand, attention); pooling the exporter would write through a gather; then the
# gather family: exact slices and value reuse first, mask products last; then the scatter
# family, slices first.
PASSES: list[AnyPass] = [
    FoldBnIntoConv(),
    MergeConvChain(),
    MergeLinearChain(),
    LayerNormToReductions(),
    GeluToErf(),
    LogicalToArithmetic(),
    CumsumToMatmul(),
    UnaryToArithmetic(),
    ExpandToConcat(),
    AttentionToMatmulSoftmax(),
    AdaptivePoolToMean(),
    SelectToSlice(),
    TopkGatherToValues(),
    IndexToMaskMatmul(),
    GatherToMaskMatmul(),
    SliceScatterToConcat(),
    ScatterToMaskMatmul(),
    IndexPutToMaskMatmul(),
    MaskedScatterToMaskMatmul(),
]

__all__ = ["PASSES"]
