"""Found by `python -m tools.fuzz` (family gather), shrunk: torch.gather on 0-d tensors.

fxlower.lower raises IndexError: tuple index out of range in gather_to_mask_matmul's check
(it indexes the shape of a rank-0 source) instead of lowering the gather or refusing it with
a reason. Any spelling (torch.gather, Tensor.gather, take_along_dim), any dtype, constant or
input index.
"""

import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class M(nn.Module):
    def forward(self, x, i):
        return torch.gather(x, 0, i)


INPUTS = (torch.tensor(-74.75), torch.tensor(0))
FRESH = (torch.tensor(float("nan")), torch.tensor(0))


def test_fuzz_gather_0d() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace")
    assert not out.failed, out.message
