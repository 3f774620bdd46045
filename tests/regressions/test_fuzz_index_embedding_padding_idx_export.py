"""Found by `python -m tools.fuzz` (family index), shrunk: nn.Embedding with padding_idx
in eval mode, captured with torch.export, whose table holds a non-finite value.

normalise wrote the table as w - (w - w.detach()) * onehot(padding_idx) (the padding row
gets no gradient in training mode) when `gm.training` was set, and the module torch.export
gave back was in training mode whatever the model's own mode: -inf - (-inf) is NaN, so the
lowered embedding returned NaN where the table has -inf (or +inf, NaN); symbolic_trace read
the module's own `training` and was exact. Fixed by ccef2d3 (the lowered module keeps the
model's training flag); this test failed before it.
"""

import torch
import torch.nn as nn

from tools.fuzz.oracle import evaluate

inf = float("inf")


def build() -> nn.Module:
    m = nn.Embedding(2, 1, padding_idx=1)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.5], [-inf]]))
    return m.eval()


INPUTS = (torch.tensor([1]),)
FRESH = (torch.tensor([0]),)


def test_symbolic_trace_is_exact() -> None:
    out = evaluate(build, INPUTS, FRESH, tracer="symbolic_trace")
    assert out.kind == "equal" and not out.failed, out.message


def test_fuzz_index_embedding_padding_idx_export() -> None:
    out = evaluate(build, INPUTS, FRESH, tracer="export")
    assert not out.failed, out.message
