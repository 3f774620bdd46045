"""adaptive_pool_to_mean: each legality condition on both sides, each spelling, the Gather
the exporter writes for a non-contiguous input gone from the file, and a property test
over random shapes, output sizes, layouts and dtypes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower
from fxlower.api import onnx_export
from fxlower.check import check_file
from fxlower.rewrite import Context, Options, Skip
from passes.adaptive_pool_to_mean import AdaptivePoolToMean

PASS = "adaptive_pool_to_mean"


class SwinPooler(nn.Module):
    """Swin's head: tokens [B, L, C] pooled over L through a transpose (not contiguous)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool1d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(x.transpose(1, 2)), 1)


class ChannelsLastPool(nn.Module):
    def __init__(self, size: object) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), self.size)


def _family(path: Path) -> dict[str, int]:
    return {k: v for k, v in check_file(path).op_counts.items()
            if k.startswith(("Gather", "Scatter"))}


@pytest.mark.parametrize("tracer", ["symbolic_trace", "export"])
def test_transposed_pool_exports_without_the_exporters_gather(tracer: str,
                                                              tmp_path: Path) -> None:
    torch.manual_seed(0)
    m, x = SwinPooler().eval(), torch.randn(2, 49, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export(m, (x,), tmp_path / "plain.onnx")
    assert _family(tmp_path / "plain.onnx") == {"Gather": 1}  # as_strided after the mean
    low = lower_quiet(m, (x,), tracer=tracer)
    (row,) = applied(low, PASS)
    assert row.detail.startswith("(49,) -> (1,)")
    assert not any("adaptive" in str(n.target) for n in low.graph.nodes)
    torch.testing.assert_close(low(x), m(x))
    onnx_export(low, (x,), tmp_path / "lowered.onnx")
    assert _family(tmp_path / "lowered.onnx") == {}


@pytest.mark.parametrize("size", [(2, 3), (None, 1), 1, (4, 6)])
def test_dividing_2d_pool_becomes_mean(size: object, tmp_path: Path) -> None:
    m, x = ChannelsLastPool(size).eval(), torch.randn(2, 4, 6, 5)
    low = lower_quiet(m, (x,))
    assert len(applied(low, PASS)) == 1
    torch.testing.assert_close(low(x), m(x))
    onnx_export(low, (x,), tmp_path / "lowered.onnx")
    assert _family(tmp_path / "lowered.onnx") == {}


@pytest.mark.parametrize("size", [(3, 3), (4, None), 5])
def test_windows_that_do_not_tile_are_refused_and_reported(size: object) -> None:
    m, x = ChannelsLastPool(size).eval(), torch.randn(2, 7, 6, 5)
    low = lower_quiet(m, (x,), on_forbidden="warn")
    assert applied(low, PASS) == []
    (skip,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert "is not a multiple of output size" in skip.reason
    assert any("adaptive_avg_pool2d" in r for r in fxlower.report_of(low).remaining)
    torch.testing.assert_close(low(x), m(x), rtol=0, atol=0)  # left as it was
    with pytest.raises(fxlower.LoweringError, match="adaptive_avg_pool2d"):
        lower_quiet(m, (x,))


def test_a_target_without_reducemean_keeps_the_pool() -> None:
    m, x = SwinPooler().eval(), torch.randn(2, 49, 8)
    low = lower_quiet(m, (x,), target="kneron-520", on_forbidden="warn")
    assert applied(low, PASS) == []
    (skip,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert skip.reason == "target 'kneron-520' has no ReduceMean"
    low = lower_quiet(m, (x,), target="rknn2@1.4.0", on_forbidden="warn")
    assert len(applied(low, PASS)) == 1


def test_unknown_input_shape_is_refused() -> None:
    gm = fx.symbolic_trace(SwinPooler())  # never run: no shapes annotated
    (node,) = [n for n in gm.graph.nodes if n.op == "call_module"]
    ctx = Context(gm, Options(), has_shapes=False)
    p = AdaptivePoolToMean()
    m = p.match(node, ctx)
    assert m is not None
    result = p.check(m, ctx)
    assert isinstance(result, Skip) and "shape is not known" in result.reason


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rank=st.sampled_from([1, 2]), batch=st.integers(1, 3), chans=st.integers(1, 4),
       ins=st.lists(st.integers(1, 12), min_size=2, max_size=2),
       outs=st.lists(st.integers(1, 6), min_size=2, max_size=2),
       transposed=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**16))
def test_property_pool_against_the_op(rank: int, batch: int, chans: int, ins: list[int],
                                      outs: list[int], transposed: bool, dtype: torch.dtype,
                                      seed: int) -> None:
    ins, outs = ins[:rank], outs[:rank]
    pool = F.adaptive_avg_pool1d if rank == 1 else F.adaptive_avg_pool2d
    size = outs[0] if rank == 1 else tuple(outs)

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return pool(x.transpose(1, -1) if transposed else x, size)

    shape = [batch, chans, *ins]
    if transposed:
        shape[1], shape[-1] = shape[-1], shape[1]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 10
    m = M().eval()
    low = lower_quiet(m, (x,), verify=False, on_forbidden="warn")
    tiles = all(n % o == 0 for n, o in zip(ins, outs, strict=True))  # the pooled dims
    assert bool(applied(low, PASS)) == tiles, (ins, outs, transposed)
    if tiles:
        torch.testing.assert_close(low(x), m(x))  # fp rounding of another summation order
    else:
        assert torch.equal(low(x), m(x))
