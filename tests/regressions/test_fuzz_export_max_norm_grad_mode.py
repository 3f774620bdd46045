"""Found by `python -m tools.fuzz` (family index, onnxruntime check), shrunk:
nn.Embedding with max_norm captured with torch.export, then called with autograd on.

torch.export functionalises the in-place renormalisation into
`aten.copy_(weight, aten.embedding_renorm(...))` on the table parameter. The lowered module
keeps that copy_, and a plain call (autograd on, as users call models, and as the ONNX
exporter runs them) raises "a leaf Variable that requires grad is being used in an in-place
operation"; the original model runs. Under torch.no_grad() it runs (and is equal), which is
why only the onnxruntime check tripped on it first. Fixed: capture writes a parameter
through a detached alias, `copy_(weight.detach(), new)`, as the eager code did.
"""

import torch
import torch.nn as nn

import fxlower


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Embedding(4, 2, max_norm=1.0).eval()


IDS = torch.tensor([[1, 0], [3, 1]])


def test_under_no_grad_it_runs() -> None:
    low = fxlower.lower(build(), (IDS,), verify=False, tracer="export", on_forbidden="warn")
    with torch.no_grad():
        assert low(IDS).shape == (2, 2, 2)


def test_fuzz_export_max_norm_grad_mode() -> None:
    low = fxlower.lower(build(), (IDS,), verify=False, tracer="export", on_forbidden="warn")
    out = low(IDS)
    assert torch.equal(out.detach(), build()(IDS).detach())
    assert isinstance(low.weight, nn.Parameter) and low.weight.requires_grad
