"""unary_to_arithmetic: for a target without Neg / Reciprocal (RKNN-Toolkit2), neg becomes
x * -1, reciprocal 1 / x and rsqrt 1 / Sqrt(x); each legality condition on both sides, and a
property test: neg and reciprocal bit for bit against PyTorch, rsqrt within 2 ulp."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower

PASS = "unary_to_arithmetic"


class Rotary(nn.Module):
    """Llama's rotate_half and RMSNorm, the ops that kept Neg and Reciprocal."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        rotated = torch.cat((-x2, x1), dim=-1)
        norm = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return rotated, norm, torch.reciprocal(x)


X = torch.randn(2, 3, 8)


def test_applied_on_rknn2_and_the_file_has_no_neg_or_reciprocal() -> None:  # 1., 2.
    m = Rotary()
    for tracer in ("symbolic_trace", "export"):
        low = lower_quiet(m, (X,), target="rknn2@2.x", tracer=tracer)
        assert len(applied(low, PASS)) == 3, tracer
        rot, norm, rec = low(X)
        ref = m(X)
        assert torch.equal(rot, ref[0]) and torch.equal(rec, ref[2])
        assert torch.allclose(norm, ref[1], rtol=1e-6, atol=0)
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(m, (X,), os.path.join(d, "m.onnx"), target="rknn2@2.x")
    ops = report.onnx["op_counts"]
    assert "Neg" not in ops and "Reciprocal" not in ops and ops["Div"] == 2


def test_kept_where_the_target_has_them_or_no_target_is_given() -> None:  # 1.
    assert applied(lower_quiet(Rotary(), (X,)), PASS) == []
    assert applied(lower_quiet(Rotary(), (X,), target="ethos-u85"), PASS) == []


def test_refused_when_the_target_lacks_div() -> None:  # 2.
    t = fxlower.Target(name="t", forbid={"Reciprocal", "Div"})
    low = lower_quiet(Rotary(), (X,), target=t, on_forbidden="warn")
    assert sorted(s.reason for s in skipped(low) if s.pass_name == PASS) == [
        "target 't' lacks Reciprocal, and its arithmetic form needs Div"] * 2


def test_refused_for_unsigned_neg_and_integer_reciprocal() -> None:  # 3.
    class Ints(nn.Module):
        def forward(self, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return -u, torch.reciprocal(i)

    u, i = torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([1, 2])
    low = lower_quiet(Ints(), (u, i), target="rknn2@2.x", on_forbidden="warn")
    assert sorted(s.reason for s in skipped(low) if s.pass_name == PASS) == [
        "neg of a torch.uint8 tensor", "reciprocal of a torch.int64 tensor"]


class Ops(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return -x, torch.reciprocal(x), torch.rsqrt(x)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]))
def test_property_bit_for_bit_and_rsqrt_within_two_ulp(shape, seed, dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 10).to(dtype)
    x.view(-1)[0] = -0.0
    if x.numel() > 2:
        x.view(-1)[1], x.view(-1)[2] = float("inf"), float("nan")
    low = lower_quiet(Ops(), (x,), target="rknn2@2.x", verify=False)
    assert len(applied(low, PASS)) == 3
    (n, r, s), (n0, r0, s0) = low(x), Ops()(x)
    num = ~n0.isnan()  # (a NaN's sign bit carries nothing)
    assert torch.equal(n.isnan(), n0.isnan())
    assert torch.equal(torch.signbit(n[num]), torch.signbit(n0[num]))
    assert torch.equal(n.nan_to_num(), n0.nan_to_num()) and torch.equal(r.nan_to_num(), r0.nan_to_num())
    finite = s0.isfinite()
    assert torch.equal(finite, s.isfinite())
    a = s0[finite].abs()
    ulp = torch.nextafter(a, torch.full_like(a, float("inf"))) - a
    assert ((s[finite] - s0[finite]).abs() <= 2 * ulp).all()
