"""cumsum_to_matmul: for a target without CumSum (RKNN-Toolkit2, Kneron, TIDL), a cumulative
sum becomes a product with a constant upper triangle; each legality condition on both
sides, and a property test against torch.cumsum, bit for bit on integers."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower

PASS = "cumsum_to_matmul"


class PositionIds(nn.Module):
    """RoBERTa's create_position_ids_from_input_ids."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids.ne(1).int()
        return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 1


class Along(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.cumsum(self.dim)


IDS = torch.tensor([[0, 5, 7, 9, 1, 1], [0, 8, 1, 1, 1, 1]])


def test_position_ids_on_rknn2_bit_exact_and_the_file_has_no_cumsum() -> None:  # 1., 2.
    for tracer in ("symbolic_trace", "export"):
        low = lower_quiet(PositionIds(), (IDS,), target="rknn2@2.x", tracer=tracer)
        (a,) = applied(low, PASS)
        assert "bit-exact" in a.detail and "6x6" in a.detail, tracer
        ids = torch.randint(0, 4, (2, 6))  # static shapes: the example's
        assert torch.equal(low(ids), PositionIds()(ids))
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(PositionIds(), (IDS,), os.path.join(d, "m.onnx"),
                                target="rknn2@2.x")
    ops = report.onnx["op_counts"]
    assert "CumSum" not in ops and "Not" not in ops and ops["MatMul"] == 1


def test_kept_where_the_target_has_cumsum_or_no_target_is_given() -> None:  # 1.
    assert applied(lower_quiet(PositionIds(), (IDS,)), PASS) == []
    assert applied(lower_quiet(PositionIds(), (IDS,), target="ethos-u85"), PASS) == []


def test_refused_when_the_target_lacks_matmul_or_transpose() -> None:  # 2.
    x = torch.randint(0, 9, (4, 5))
    t = fxlower.Target(name="t", forbid={"CumSum", "Transpose"})
    low = lower_quiet(Along(0), (x,), target=t, on_forbidden="warn")
    assert [s.reason for s in skipped(low) if s.pass_name == PASS] == [
        "target 't' lacks CumSum, and its product form needs Transpose"]
    assert len(applied(lower_quiet(Along(1), (x,), target=t), PASS)) == 1  # last dim: no Transpose


def test_refused_beyond_2048_and_for_floats_unless_finite_is_promised() -> None:  # 3., 4.
    t = "rknn2@2.x"
    low = lower_quiet(Along(1), (torch.ones(1, 2049, dtype=torch.int64),), target=t,
                      on_forbidden="warn")
    assert ["2049 > 2048" in s.reason for s in skipped(low) if s.pass_name == PASS] == [True]
    x = torch.randn(3, 7)
    low = lower_quiet(Along(1), (x,), target=t, on_forbidden="warn")
    assert ["0 * inf = NaN" in s.reason for s in skipped(low) if s.pass_name == PASS] == [True]
    low = lower_quiet(Along(1), (x,), target=t, assume_finite=True)
    (a,) = applied(low, PASS)
    assert "rounding-level" in a.detail and torch.allclose(low(x), x.cumsum(1), atol=1e-5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data(),
       dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.bool, torch.int16]),
       big=st.booleans(), seed=st.integers(0, 2**16))
def test_property_against_cumsum_bit_for_bit(shape, data, dtype, big, seed) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        x = torch.rand(shape, generator=g) > 0.5
    else:
        info = torch.iinfo(dtype)
        lo, hi = (info.min, info.max) if big else (max(info.min, -50), min(info.max, 50))
        x = torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(dtype)
    low = lower_quiet(Along(dim), (x,), target="rknn2@2.x")
    assert len(applied(low, PASS)) == 1
    y = low(x)
    assert y.dtype == x.cumsum(dim).dtype and torch.equal(y, x.cumsum(dim))  # wraps alike


def test_a_cumsum_over_an_earlier_dim_keeps_pytorchs_contiguous_result() -> None:
    class ViewAfter(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return (ids != 1).int().cumsum(0).view(-1)  # .view() needs contiguous strides

    for tracer in ("symbolic_trace", "export"):
        low = lower_quiet(ViewAfter(), (IDS,), target="rknn2@2.x", tracer=tracer)
        assert len(applied(low, PASS)) == 1
        assert torch.equal(low(IDS), ViewAfter()(IDS))
