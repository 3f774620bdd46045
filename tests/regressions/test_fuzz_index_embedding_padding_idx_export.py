"""Found by `python -m fxlower.fuzz` (family index), shrunk: nn.Embedding with padding_idx
in eval mode, captured with torch.export, whose table holds a non-finite value.

normalise writes the table as w - (w - w.detach()) * onehot(padding_idx) (the padding row
gets no gradient in training mode) when `gm.training` is set, and the module torch.export
gives back is in training mode whatever the model's own mode: -inf - (-inf) is NaN, so the
lowered embedding returns NaN where the table has -inf (or +inf, NaN). symbolic_trace reads
the module's own `training` and is exact.
"""

import pytest
import torch
import torch.nn as nn

from fxlower.fuzz import evaluate

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


@pytest.mark.xfail(strict=True, reason="normalise applies the training-mode padding-row trick "
                   "to eval models captured by torch.export: NaN instead of -inf (bug found by "
                   "the fuzzer, not fixed yet)")
def test_fuzz_index_embedding_padding_idx_export() -> None:
    out = evaluate(build, INPUTS, FRESH, tracer="export")
    assert not out.failed, out.message
