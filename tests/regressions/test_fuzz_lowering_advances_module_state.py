"""Found by `python -m tools.fuzz` (family index), shrunk: nn.Embedding with max_norm in
float16, and then the same effect on a training-mode BatchNorm.

lower() runs the captured graph on the example inputs (the capture check and shape
annotation, once per changed pass), on the deep copy it returns. Modules whose forward
changes their own state keep those changes: an embedding with max_norm is renormalised
again (in float16 the renormalised row's norm rounds above max_norm, so every run shrinks
it further and the lowered model's output differs from the original's first call), and a
training-mode BatchNorm's running statistics have moved (num_batches_tracked 2 instead of
0): the returned module is not the model the user passed. Fixed: symbolic tracing inlines
nn.Embedding into F.embedding(max_norm=...), which graph.stateful() (now writes_parameters) did not see as a write;
graph._mutates now counts it, so lowering's runs restore the table.
"""

import torch
import torch.nn as nn

import fxlower
from tools.fuzz.oracle import evaluate


def embedding() -> nn.Module:
    m = nn.Embedding(1, 3, padding_idx=0, max_norm=1.0).to(torch.float16)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[8044.0, 19504.0, 35456.0]]))
    return m.eval()


def test_fuzz_max_norm_embedding_float16() -> None:
    ids = (torch.tensor([0]),)
    out = evaluate(embedding, ids, ids, tracer="symbolic_trace")
    assert not out.failed, out.message


def test_fuzz_batchnorm_running_statistics_are_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    x = torch.randn(2, 1, 3, 3)
    low = fxlower.lower(model, (x,), verify=False, on_forbidden="warn")
    buffers = dict(low.named_buffers())
    assert int(buffers["1.num_batches_tracked"]) == 0
    assert torch.equal(buffers["1.running_mean"], model[1].running_mean)
