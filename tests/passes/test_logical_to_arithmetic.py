"""logical_to_arithmetic: for a target without And / Or / Xor / Not / IsNaN / IsInf
(RKNN-Toolkit2), the op becomes Cast arithmetic on 0/1 floats; each legality condition on
both sides, and a property test of every op against PyTorch, bit for bit."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower

PASS = "logical_to_arithmetic"
LOGICAL = ("And", "Or", "Xor", "Not", "IsNaN", "IsInf")


class Masks(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b = x > 0, y < 0.5
        return (a & b, a | b, a ^ b, ~a, torch.isnan(x), torch.isinf(y),
                torch.logical_and(x, y), torch.logical_not(y), x != y, x.ne(0.0))


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    x[0, :3] = torch.tensor([float("nan"), 0.0, -0.0])
    y[1, :3] = torch.tensor([float("inf"), -float("inf"), 0.0])
    return x, y


def _equal(low: torch.nn.Module, m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(low(*inputs), m(*inputs), strict=True))


def test_applied_for_every_op_the_target_lacks_and_the_file_shows_it() -> None:  # 1., 2.
    x, y = _inputs()
    for tracer in ("symbolic_trace", "export"):
        low = lower_quiet(Masks(), (x, y), target="rknn2@1.4.0", tracer=tracer)
        assert len(applied(low, PASS)) == 10, tracer
        assert all("bit-exact" in a.detail for a in applied(low, PASS))
        assert _equal(low, Masks(), _inputs(1))
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(Masks(), (x, y), os.path.join(d, "m.onnx"),
                                target="rknn2@1.4.0")
    ops = report.onnx["op_counts"]
    assert not set(ops) & set(LOGICAL) and ops["Cast"] > 0


def test_kept_where_the_target_has_the_op() -> None:  # 1.
    x, y = _inputs()
    assert applied(lower_quiet(Masks(), (x, y)), PASS) == []
    low = lower_quiet(Masks(), (x, y), target="rknn2@2.x")  # 2.x has And, lacks the others
    done = [a.detail.split(" ")[0] for a in applied(low, PASS)]
    assert sorted(done) == ["IsInf", "IsNaN", "Not", "Not", "Not", "Not", "Or", "Xor"]


def test_refused_when_the_target_lacks_cast() -> None:  # 2.
    t = fxlower.Target(name="no-cast", forbid={"And", "Cast"})
    x, y = _inputs()
    low = lower_quiet(Masks(), (x, y), target=t, on_forbidden="warn")
    reasons = {s.reason for s in skipped(low) if s.pass_name == PASS}
    assert reasons == {"target 'no-cast' lacks And, and its arithmetic form needs Cast"}


def test_refused_for_bitwise_ops_on_integers_and_isnan_of_integers() -> None:  # 3.
    class Ints(nn.Module):
        def forward(self, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return i & 6, torch.isnan(i)

    i = torch.arange(12).reshape(3, 4)
    t = fxlower.Target(name="t", forbid={"And", "BitwiseAnd", "IsNaN"})
    low = lower_quiet(Ints(), (i,), target=t, on_forbidden="warn")
    reasons = sorted(s.reason for s in skipped(low) if s.pass_name == PASS)
    assert reasons == ["IsNaN of a torch.int64 tensor is not a float test",
                       "a bitwise and of torch.int64 operands (Bitwise ops, not logical ones)"]
    assert all(torch.equal(p, q) for p, q in zip(low(i), Ints()(i), strict=True))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]))
def test_property_every_op_bit_for_bit(shape, seed, dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0])
    pick = torch.randint(0, 12, (2, *shape), generator=g)
    vals = torch.where(pick < 6, specials[pick.clamp(max=5)], torch.randn(2, *shape, generator=g))
    x, y = vals[0].to(dtype), vals[1].to(dtype)
    low = lower_quiet(Masks(), (x, y), target="rknn2@1.4.0", verify=False)
    assert len(applied(low, PASS)) == 10
    assert _equal(low, Masks(), (x, y))


def test_refused_for_a_bool_tensor_with_a_number_which_pytorch_makes_an_integer_op() -> None:  # 3.
    class Lit(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return (x > 0) & 2, (x > 0) | True  # int64 [0, 2, ...]; bool

    x = torch.randn(3, 4)
    low = lower_quiet(Lit(), (x,), target="rknn2@1.4.0", tracer="symbolic_trace",
                      on_forbidden="warn")
    reasons = [s.reason for s in skipped(low) if s.pass_name == PASS]
    assert reasons == ["a bitwise and of a bool tensor and a number: PyTorch promotes it to an "
                       "integer op"]
    assert len(applied(low, PASS)) == 1  # `| True` stays logical
    assert all(torch.equal(p, q) for p, q in zip(low(x), Lit()(x), strict=True))
