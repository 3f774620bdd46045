"""Found by `python -m tools.fuzz` (families index and gather), shrunk: an empty index
known when lowering (a buffer or constant with no elements).

index_to_mask_matmul and gather_to_mask_matmul turn a constant index into runs of slices
(kernels.runs) and concatenate them (kernels.slice_rows); with no index there are no runs,
and torch.cat([]) raises inside fxlower.lower ("expected a non-empty list of Tensors")
instead of the rewrite producing the empty result (or refusing). A constant gather index
with an empty dim other than the gathered one fails earlier, in gather_to_mask_matmul's
check, which probes the index's first slice along every dim (`narrow(d, 0, 1)`).
"""

import pytest
import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class Index(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("idx", torch.zeros(0, dtype=torch.int64))

    def forward(self, x):
        return x[self.idx]


class Gather(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("idx", torch.zeros(1, 1, dtype=torch.int64))

    def forward(self, x):
        return torch.take_along_dim(x, self.idx.expand(1, 0), dim=1)


class GatherEmptyOtherDim(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("idx", torch.zeros(2, 0, dtype=torch.int64))

    def forward(self, x):
        return torch.take_along_dim(x, self.idx, dim=0)


X = (torch.tensor([[1.5, float("nan"), -0.0]]),)
X2 = (torch.tensor([[2.5, 3.0, float("inf")]]),)
CASES = {"index": (Index, X, X2), "gather": (Gather, X, X2),
         "gather_empty_other_dim": (GatherEmptyOtherDim, (torch.zeros(5, 0),), (torch.ones(5, 0),))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fuzz_empty_constant_index(case: str) -> None:
    model, x, x2 = CASES[case]
    out = evaluate(model, x, x2, tracer="symbolic_trace")
    assert not out.failed, out.message
