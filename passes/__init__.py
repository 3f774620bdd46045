"""The rewrite passes, in run order. A new rewrite adds one file here and one line below."""

from __future__ import annotations

from fxlower.rewrite import RewritePass

from .fold_bn_into_conv import FoldBnIntoConv
from .gather_to_mask_matmul import GatherToMaskMatmul
from .index_to_mask_matmul import IndexToMaskMatmul
from .merge_conv_chain import MergeConvChain
from .merge_linear_chain import MergeLinearChain
from .select_to_slice import SelectToSlice

# Run order: cheap exact slices first, then the mask products.
PASSES: list[RewritePass] = [
    FoldBnIntoConv(),
    MergeConvChain(),
    MergeLinearChain(),
    SelectToSlice(),
    IndexToMaskMatmul(),
    GatherToMaskMatmul(),
]

__all__ = ["PASSES"]
