"""Found by `python -m tools.fuzz` (family index, onnxruntime check), shrunk:
F.embedding with max_norm, captured with torch.export.

torch.export splits it into aten.embedding_renorm (the in-place renormalisation of the
table) and aten.embedding; index_to_mask_matmul lowers the embedding, and the census does
not see embedding_renorm, which exports to Gather + ScatterND. So lower() (on_forbidden=
"raise") returns, the report lists nothing remaining, and the exported file still holds
Gather and ScatterND. With symbolic tracing the embedding is refused with its reason
("max_norm renormalises the embedding table in place"), as the README says.
Fixed: the census knows aten.embedding_renorm (Gather + ScatterND), so it is reported as
remaining and lower(on_forbidden="raise") raises naming it.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxlower
from tools.fuzz.oracle import evaluate


class M(nn.Module):
    def forward(self, ids, w):
        return F.embedding(ids, w, padding_idx=0, max_norm=1.0)


W = torch.randn(9, 6, generator=torch.Generator().manual_seed(0))
INPUTS = (torch.tensor([3]), W)
FRESH = (torch.tensor([5]), W * 2)


def test_symbolic_trace_refuses_with_the_reason() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="symbolic_trace", onnx=True)
    assert out.kind == "refused" and not out.failed
    assert any("max_norm renormalises" in r for _, r in out.skipped), out.skipped


def test_fuzz_index_embedding_renorm_export() -> None:
    out = evaluate(M, INPUTS, FRESH, tracer="export", onnx=True)
    assert not out.failed, out.onnx_message
    assert any("embedding_renorm" in r for r in out.remaining), out.remaining


def test_lower_raises_naming_embedding_renorm() -> None:
    with pytest.raises(fxlower.LoweringError, match="embedding_renorm"):
        fxlower.lower(M(), INPUTS, tracer="export")
