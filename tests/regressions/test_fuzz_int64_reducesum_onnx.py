"""Found by `python -m tools.fuzz` (families gather and topk, onnxruntime check), shrunk:
a gather whose index varies along every dim, on int64 values beyond 2**53.

gather_to_mask_matmul's elementwise form is `where(idx == n, x, 0).sum(-1)`: exact in
PyTorch, but onnxruntime 1.32's int64 ReduceSum rounds through float64, so values beyond
2**53 come back rounded (2**62 + 1 -> 2**62) where the original's GatherElements copies them.
The README promises bit-exactness "for integer sources beyond 2**24 ... through onnxruntime".
"""

import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class M(nn.Module):
    def forward(self, x, i):
        return torch.gather(x, 0, i)


INPUTS = (torch.tensor([2**62 + 1, -(2**61) - 3]), torch.tensor([0, 1, 1, 0]))
FRESH = (torch.tensor([-(2**62) - 5, 2**55 + 1]), torch.tensor([1, 1, 0, 0]))


def test_in_pytorch_it_is_exact() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace")
    assert out.kind == "equal" and not out.failed, out.message


def test_fuzz_int64_reducesum_onnx() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace", onnx=True)
    assert out.onnx == "equal", out.onnx_message
