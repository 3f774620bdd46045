"""Every gather-family form (gather, take_along_dim, index_select, embedding, integer select,
advanced indexing, take, the MAE pattern, unfold, attention): lowered on both capture paths
by whichever passes it needs, the op gone, outputs bit-exact (non-finite sources included),
for every dtype. The forms are also exported by tests/test_onnx_roundtrip.py; each pass's
own tests are in tests/passes/."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import assert_same_outputs, gather_ops_left, lower_quiet, nonfinite
from strategies import randint as _i
from strategies import randn as _x

import fxlower

TRACERS = ["symbolic_trace", "export"]


class Gather(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x, idx):
        return torch.gather(x, self.dim, idx), x.gather(self.dim, idx)


class TakeAlongDim(nn.Module):
    def forward(self, x, idx):
        return torch.take_along_dim(x, idx, 1), torch.take_along_dim(x, idx)


class IndexSelect(nn.Module):
    def forward(self, x, i):
        return torch.index_select(x, 1, i), x.index_select(-1, i[:2]), torch.index_select(x, 0, i[0])


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6, padding_idx=0)
        self.table = nn.Parameter(torch.randn(11, 3))

    def forward(self, tok):
        return self.emb(tok), F.embedding(tok, self.table, padding_idx=2)


class IntSelect(nn.Module):
    def forward(self, x):
        a, b, c = torch.unbind(x, 1)[:3] if False else (x[:, 0], x[..., -1], x.select(1, 2))
        u = torch.unbind(x, 2)
        return a, b, c, u[1], x[1:, -2], x[0, :, 1]


class Advanced(nn.Module):
    def forward(self, x, i, j):
        return x[i], x[:, i], x[i, j], x[:, i, :, j], x[..., i], x[i.unsqueeze(1), j]


class Take(nn.Module):
    def forward(self, x, i):
        return torch.take(x, i), x.take(i.reshape(-1)[:3])


class MaeMasking(nn.Module):
    """The MAE pattern: the index is broadcast along the embedding dim."""

    def forward(self, x, noise):
        b, n, d = x.shape
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, : n // 4]
        kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = (torch.arange(n) >= n // 4).to(x.dtype).expand_as(noise)
        mask = torch.gather(mask, 1, ids_restore)
        kept2 = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        return kept, mask, kept2


class Unfold(nn.Module):
    def forward(self, x):
        return x.unfold(1, 3, 2), x.unfold(-1, 2, 1)


class Attention(nn.Module):
    """nn.MultiheadAttention: symbolic tracing keeps it opaque, so capture uses torch.export."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


CASES = {
    "gather_dim1": (lambda: Gather(1), lambda: (nonfinite(_x(3, 5, 4)), _i(5, 3, 7, 4))),
    "gather_dim0_smaller": (lambda: Gather(0), lambda: (nonfinite(_x(6, 5)), _i(6, 2, 3))),
    "gather_neg_dim": (lambda: Gather(-1), lambda: (nonfinite(_x(2, 3, 9)), _i(9, 2, 3, 4))),
    "take_along_dim": (TakeAlongDim, lambda: (nonfinite(_x(4, 6)), _i(6, 4, 3))),
    "index_select": (IndexSelect, lambda: (nonfinite(_x(4, 5, 6)), _i(4, 4))),
    "embedding": (Embed, lambda: (_i(11, 2, 7),)),
    "int_select": (IntSelect, lambda: (nonfinite(_x(3, 4, 5)),)),
    "advanced": (Advanced, lambda: (nonfinite(_x(5, 5, 5, 5)), _i(5, 3, low=-5), _i(5, 3, seed=2))),
    "take": (Take, lambda: (nonfinite(_x(3, 4)), _i(12, 2, 5, low=-12))),
    "mae": (MaeMasking, lambda: (nonfinite(_x(2, 16, 8)), _x(2, 16, seed=3))),
    "unfold": (Unfold, lambda: (nonfinite(_x(2, 9, 4)),)),
    "mha": (Attention, lambda: (_x(2, 5, 8),)),
}


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_form_is_lowered_exactly(case: str, tracer: str) -> None:
    make_model, make_inputs = CASES[case]
    torch.manual_seed(0)
    model = make_model().eval()
    inputs = make_inputs()
    if case == "mha" and tracer == "symbolic_trace":  # forced: the module stays opaque
        with pytest.raises(fxlower.LoweringError, match="nn.MultiheadAttention 'mha'"):
            lower_quiet(model, inputs, tracer=tracer)
        return
    lowered = lower_quiet(model, inputs, tracer=tracer)
    report = fxlower.report_of(lowered)
    expected = "torch.export" if tracer == "export" or case == "mha" else "symbolic_trace"
    assert report.capture == expected
    assert report.applied, "no rewrite fired"
    assert report.ops_before, "the census saw no gather-family op before lowering"
    assert gather_ops_left(lowered) == {}
    # mha: the captured graph computes attention with decomposed ops, not the fused eager
    # kernel, so it is equal within fp32 rounding; the rewrites themselves are slices
    assert report.verification["bit_exact"] is (case != "mha")
    if case == "mha":
        assert report.verification["max_abs_error"] < 1e-5
        return
    # fresh draws of every valid input, with non-finite values, stay bit-exact
    for seed in range(3):
        fresh = tuple(
            nonfinite(torch.randn_like(t), seed) if t.is_floating_point()
            else t.reshape(-1)[torch.randperm(t.numel())].reshape(t.shape)  # valid values, shuffled
            for t in inputs
        )
        assert_same_outputs(model(*fresh), lowered(*fresh))


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8,
              torch.uint8, torch.bool]
)
@pytest.mark.parametrize("tracer", TRACERS)
def test_dtypes_are_exact(dtype: torch.dtype, tracer: str) -> None:
    class M(nn.Module):
        def forward(self, x, i, j):
            return torch.gather(x, 1, j), x[:, i], x.index_select(0, i[:2]), x[i[0]]

    if dtype == torch.int64:
        x = torch.randint(-(2**62), 2**62, (4, 6))  # far beyond 2**24: not exact through float32
    elif dtype == torch.bool:
        x = torch.rand(4, 6) > 0.5
    elif dtype.is_floating_point:
        x = nonfinite(_x(4, 6)).to(dtype)
    else:
        x = torch.randint(0, 100, (4, 6)).to(dtype)
    i, j = _i(4, 3), _i(6, 4, 5)
    lowered = lower_quiet(M(), (x, i, j), tracer=tracer)
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(M()(x, i, j), lowered(x, i, j))
