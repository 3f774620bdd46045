"""Found by `python -m tools.fuzz` (family topk, onnxruntime check), shrunk: a gather at
argsort indices.

topk_gather_to_values writes `torch.sort(x, dim, descending, stable=False)` for
`gather(x, d, argsort(x, d))`; passing `stable=` selects the `aten.sort.stable` overload,
which the torch 2.13 ONNX exporter cannot convert ("No decompositions registered for the
real-valued input"), so the lowered module no longer exports while the original does
(TopK + GatherElements). Every dtype.
"""

import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class M(nn.Module):
    def forward(self, x):
        return torch.gather(x, 0, torch.argsort(x, dim=0))


INPUTS = (torch.tensor([[3.0, -1.0], [0.5, 2.0]]),)
FRESH = (torch.tensor([[-2.0, 1.0], [4.0, 0.0]]),)


def test_in_pytorch_it_is_exact() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace")
    assert out.kind == "equal" and not out.failed, out.message


def test_fuzz_topk_argsort_onnx() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace", onnx=True)
    assert out.onnx == "equal", out.onnx_message
