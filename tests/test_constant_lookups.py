"""Constant folding of constant lookups (passes/_common.py `fold_lookup`, issue 12): a table
looked up by an index both known when lowering becomes one constant of the looked-up
values, never a precomputed one-hot; each legality condition is hit on both sides."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, gather_ops_left, lower_quiet

import fxlower
from fxlower.api import onnx_export


class RelPosBias(nn.Module):
    """BEiT/Swin's relative position bias: a [N, H] parameter table indexed by a constant
    [K] buffer of random rows (far more than 16 runs, so no slices)."""

    def __init__(self, n: int = 60, heads: int = 4, k: int = 400) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = nn.Parameter(torch.randn(n, heads, generator=g))
        self.register_buffer("index", torch.randint(0, n, (k,), generator=g))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        bias = self.table[self.index.view(-1)].view(20, -1, self.table.shape[1])
        return scores + bias.permute(2, 0, 1)


def _scores(m: RelPosBias) -> torch.Tensor:
    return torch.randn(m.table.shape[1], 20, m.index.numel() // 20)


def _rows(lowered: torch.fx.GraphModule) -> list[str]:
    return [a.detail for a in applied(lowered, "index_to_mask_matmul")]


def _consts(lowered: torch.fx.GraphModule) -> list[str]:
    return [str(n.target) for n in lowered.graph.nodes if n.op == "get_attr"]


def test_eval_mode_lookup_is_folded_bit_exact_and_small() -> None:
    m = RelPosBias().eval()
    s = _scores(m)
    for tracer in ("symbolic_trace", "export"):
        lowered = lower_quiet(m, (s,), tracer=tracer)
        (detail,) = _rows(lowered)
        assert detail.startswith("constant lookup of a constant source: folded"), detail
        assert not any(c.startswith("_fxl_onehot") for c in _consts(lowered))
        assert gather_ops_left(lowered) == {}
        assert_same_outputs(m(s), lowered(s))
    with tempfile.TemporaryDirectory() as d:
        plain, low = os.path.join(d, "plain.onnx"), os.path.join(d, "low.onnx")
        onnx_export(m, (s,), plain)
        report = fxlower.export(m, (s,), low)
        assert report.onnx["forbidden"] == 0
        # the size rule of issue 12: never more than 1.25x the plain export + 256 KB
        assert os.path.getsize(low) <= 1.25 * os.path.getsize(plain) + 256 * 1024


def test_training_mode_keeps_the_one_hot_so_the_table_learns() -> None:
    m = RelPosBias().train()
    s = _scores(m)
    lowered = lower_quiet(m, (s,), tracer="symbolic_trace")
    (detail,) = _rows(lowered)
    assert detail.startswith("constant index: precomputed one-hot matmul"), detail
    m(s).sum().backward()
    lowered(s).sum().backward()
    lowered_table = dict(lowered.named_parameters())["table"]
    assert m.table.grad is not None and lowered_table.grad is not None
    assert torch.equal(m.table.grad, lowered_table.grad)


def test_training_mode_with_a_frozen_table_is_folded() -> None:
    m = RelPosBias().train()
    m.table.requires_grad_(False)
    s = _scores(m)
    (detail,) = _rows(lower_quiet(m, (s,), tracer="symbolic_trace"))
    assert detail.startswith("constant lookup of a constant source: folded"), detail


def test_fold_larger_than_the_one_hot_is_refused() -> None:
    m = RelPosBias(n=4, heads=64, k=400).eval()  # K*R = 25,600 values > K*N = 1,600
    s = _scores(m)
    lowered = lower_quiet(m, (s,), tracer="symbolic_trace")
    (detail,) = _rows(lowered)
    assert detail.startswith("constant index: precomputed one-hot matmul"), detail
    assert_same_outputs(m(s), lowered(s))


def test_input_dependent_source_is_not_folded() -> None:
    class Perm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("perm", torch.randperm(40, generator=torch.Generator().manual_seed(0)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, self.perm]

    x = torch.randn(3, 40)
    lowered = lower_quiet(Perm().eval(), (x,))
    (detail,) = _rows(lowered)
    assert detail.startswith("constant index: precomputed one-hot matmul"), detail


def test_constant_gather_of_a_parameter_is_folded() -> None:
    class ConstGather(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(1)
            self.src = nn.Parameter(torch.randn(6, 30, generator=g))
            self.register_buffer("idx", torch.randint(0, 30, (6, 25), generator=g))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.gather(self.src, 1, self.idx)

    m, x = ConstGather().eval(), torch.randn(6, 25)
    for tracer in ("symbolic_trace", "export"):
        lowered = lower_quiet(m, (x,), tracer=tracer)
        (row,) = applied(lowered, "gather_to_mask_matmul")
        assert row.detail.startswith("constant lookup of a constant source: folded"), row.detail
        assert row.macs == 0
        assert_same_outputs(m(x), lowered(x))
