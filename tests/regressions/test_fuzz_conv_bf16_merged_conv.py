"""Found by `python -m fxlower.fuzz` (family conv, bfloat16), then reduced by hand: a conv
chain whose merged conv PyTorch's CPU bfloat16 kernel (oneDNN) gets wrong.

merge_conv_chain merges Conv2d(1, 1, (7, 1), padding=(2, 0)) -> Conv2d(1, 1, (1, 3),
stride=(1, 2)) into one Conv2d(1, 1, (7, 3), stride=(1, 2), padding=(2, 0)) - exact algebra
(checked in float64 below). On a (1, 1, 7, 3) input that conv has one output column, and
PyTorch 2.13's CPU bfloat16 convolution reads uninitialised memory for it: the output holds
values like 1e30 or merely wrong ones that change from call to call (float32, float16 and
bfloat16 with mkldnn disabled are right). The chain itself does not hit it, so the lowered
bfloat16 model is "rewritten and different" in PyTorch on the CPU.
"""

import pytest
import torch
import torch.nn as nn

import fxlower


def build(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 1, (7, 1), padding=(2, 0), bias=False),
                      nn.Conv2d(1, 1, (1, 3), stride=(1, 2), bias=False))
    return m.to(dtype).eval()


X = torch.randn(1, 1, 7, 3, generator=torch.Generator().manual_seed(1))


def _lower(dtype: torch.dtype) -> torch.fx.GraphModule:
    low = fxlower.lower(build(dtype), (X.to(dtype),), verify=False, merge="always")
    assert [a.pass_name for a in fxlower.report_of(low).applied] == ["merge_conv_chain"]
    return low


def test_the_merge_is_exact_in_float64() -> None:
    low = _lower(torch.float64)
    with torch.no_grad():
        err = (low(X.double()) - build(torch.float64)(X.double())).abs().max()
    assert err < 1e-14


@pytest.mark.xfail(strict=True, reason="PyTorch's CPU bfloat16 conv (oneDNN) reads "
                   "uninitialised memory for the merged conv's shape (found by the fuzzer; "
                   "merge_conv_chain could refuse such merges in bfloat16, not fixed yet)")
def test_fuzz_conv_bf16_merged_conv() -> None:
    low = _lower(torch.bfloat16)
    with torch.no_grad():
        ref = build(torch.float64)(X.double())  # the same bf16 weights, in float64
        worst = 0.0
        for _ in range(5):
            junk = [torch.full((4096,), 1e30) for _ in range(8)]  # dirty the allocator
            del junk
            got = low(X.to(torch.bfloat16)).double()
            worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
    assert worst < 0.05, f"relative error {worst:.3g}"
