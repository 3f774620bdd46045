"""Found by `python -m tools.fuzz` (family gather, onnxruntime check), shrunk: a float16
gather whose index varies along every dim, with assume_finite=True.

gather_to_mask_matmul's elementwise form is `where(idx == n, x, 0).sum(-1).to(float16)`.
The torch 2.13 ONNX exporter writes a float16 sum as Cast(float32) + ReduceSum and drops the
`.to(float16)` (a no-op in PyTorch), so the exported file's output is float32 where the
original's (GatherElements) is float16. The values are the same; the output type is not.
Without assume_finite the non-finite restore path casts back and the type is right.
Fixed: the float16 masked sum is taken in float32 (exact: one term) and cast back.
"""

import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate


class M(nn.Module):
    def forward(self, x, i):
        return torch.take_along_dim(x, i, dim=-1)


G = torch.Generator().manual_seed(0)
INPUTS = (torch.randn(2, 3, generator=G).half(), torch.randint(0, 3, (2, 4), generator=G))
FRESH = (torch.randn(2, 3, generator=G).half(), torch.randint(0, 3, (2, 4), generator=G))


def test_without_assume_finite_the_output_type_is_kept() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace", onnx=True)
    assert out.onnx == "equal", out.onnx_message


def test_fuzz_float16_sum_onnx_dtype() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace", onnx=True, assume_finite=True)
    assert out.onnx == "equal", out.onnx_message
