"""Found by `python -m tools.fuzz` (families scatter and masked_scatter, onnxruntime
check), shrunk: scatter and masked_scatter into bool tensors.

The lowered graphs select bool values with Where, and onnxruntime 1.32 has no Where kernel
for bool ("Could not find an implementation for Where(16)"), so the lowered ONNX file does
not run where the original (ScatterElements / ScatterND) does. Exact in PyTorch.
Fixed: scatter_ops.select picks bool values with And/Or/Not instead of Where.
"""

import pytest
import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class Scatter(nn.Module):
    def forward(self, x, i):
        return x.scatter(1, i, True)


class IndexPut(nn.Module):
    def forward(self, x, i, v):
        return x.index_put((i,), v)


class MaskedScatter(nn.Module):
    def forward(self, x, m, s):
        return x.masked_scatter(m, s)


CASES = {
    "index_put": (IndexPut, (torch.tensor([False, True, True]), torch.tensor([2, 0]),
                             torch.tensor([True, False])),
                  (torch.tensor([True, False, False]), torch.tensor([1, 1]),
                   torch.tensor([False, True]))),
    "scatter": (Scatter, (torch.tensor([[False], [True]]), torch.tensor([[0]])),
                (torch.tensor([[True], [False]]), torch.tensor([[0]]))),
    "masked_scatter": (MaskedScatter,
                       (torch.tensor([False, True, False]), torch.tensor([True, False, True]),
                        torch.tensor([True, True, False])),
                       (torch.tensor([True, True, False]), torch.tensor([False, True, True]),
                        torch.tensor([False, True, True]))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_in_pytorch_it_is_exact(case: str) -> None:
    model, inputs, fresh = CASES[case]
    out = evaluate(model, inputs, fresh, tracer="symbolic_trace")
    assert out.kind == "equal" and not out.failed, out.message


@pytest.mark.parametrize("case", sorted(CASES))
def test_fuzz_bool_where_onnx(case: str) -> None:
    model, inputs, fresh = CASES[case]
    out = evaluate(model, inputs, fresh, tracer="symbolic_trace", onnx=True)
    assert out.onnx == "equal", out.onnx_message
