"""Found by `python -m tools.fuzz` (families scatter and index_put), shrunk: scatter-family
writes with no writer at all (an empty index).

The last-writer-wins formulation takes ReduceMax over the writers (scatter_ops._last_writer,
`amax`); with zero writers that reduction is over an empty dim and raises inside
fxlower.lower ("amax(): Expected reduction dim 0 to have non-zero size"). PyTorch returns x
unchanged. Assignment forms only (scatter, index_put, index_copy); sums (scatter_add,
index_add) were fine. Fixed: with zero writers rows_assign / rows_accumulate return x as it is.
"""

import pytest
import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class Scatter(nn.Module):
    def forward(self, x, i, s):
        return torch.scatter(x, 0, i, s)


class IndexPut(nn.Module):
    def forward(self, x, i, s):
        return x.index_put((i,), s)


class IndexCopy(nn.Module):
    def forward(self, x, i, s):
        return x.index_copy(0, i, s)


X = torch.tensor([[1.0, -0.0], [float("nan"), 2.0]])
CASES = {
    "scatter": (Scatter, torch.zeros(0, 2, dtype=torch.int64), torch.zeros(0, 2)),
    "index_put": (IndexPut, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 2)),
    "index_copy": (IndexCopy, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fuzz_scatter_without_writers(case: str) -> None:
    model, i, s = CASES[case]
    out = evaluate(model, (X, i, s), (X * 2, i, s), tracer="symbolic_trace", onnx=True)
    assert out.kind == "equal" and not out.failed, out.message
    assert out.onnx == "equal", out.onnx_message
