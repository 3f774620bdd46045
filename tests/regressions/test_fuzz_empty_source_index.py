"""Found by `python -m tools.fuzz` (family index) with size-0 dims, then reduced by hand:
advanced indexing into a tensor with no elements.

index_to_mask_matmul views the source as [pre, N, post]; with an empty dim after the indexed
one (post == 0) the written graph reshapes to a shape inferred from zero elements ("shape
'[1, 3]' is invalid for input of size 0"), and with an empty indexed dim (N == 0, only an
empty index is valid) its stride arithmetic divides by zero, both inside fxlower.lower.
PyTorch returns the empty result.
"""

import pytest
import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class M(nn.Module):
    def forward(self, x, i):
        return x[i]


CASES = {
    "post_empty": (torch.zeros(3, 0), torch.tensor([0, 2])),
    "indexed_dim_empty": (torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fuzz_empty_source_index(case: str) -> None:
    x, i = CASES[case]
    out = evaluate(M, (x, i), (x, i), tracer="symbolic_trace")
    assert not out.failed, out.message
