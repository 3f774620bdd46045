"""expand_to_concat: for a target without Expand (rknn2@1.4.0), a broadcast copy becomes a
Concat of copies; each legality condition on both sides, and a property test against
Tensor.expand, bit for bit."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower

PASS = "expand_to_concat"


class RepeatKv(nn.Module):
    """Llama's repeat_kv: [B, Hkv, S, D] -> [B, Hkv * n, S, D]."""

    def forward(self, kv: torch.Tensor) -> torch.Tensor:
        b, h, s, d = kv.shape
        return kv[:, :, None, :, :].expand(b, h, 3, s, d).reshape(b, h * 3, s, d)


KV = torch.randn(2, 2, 5, 4)


def test_repeat_kv_on_rknn2_and_the_file_has_no_expand() -> None:  # 1., 2.
    for tracer in ("symbolic_trace", "export"):
        low = lower_quiet(RepeatKv(), (KV,), target="rknn2@1.4.0", tracer=tracer)
        (a,) = applied(low, PASS)
        assert "dim 2 x3" in a.detail, tracer
        kv = torch.randn(2, 2, 5, 4)
        assert torch.equal(low(kv), RepeatKv()(kv))
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(RepeatKv(), (KV,), os.path.join(d, "m.onnx"),
                                target="rknn2@1.4.0")
    ops = report.onnx["op_counts"]
    assert "Expand" not in ops and ops["Concat"] == 1


def test_kept_where_the_target_has_expand_or_no_target_is_given() -> None:  # 1.
    assert applied(lower_quiet(RepeatKv(), (KV,)), PASS) == []
    assert applied(lower_quiet(RepeatKv(), (KV,), target="rknn2@2.x"), PASS) == []


def test_refused_without_concat_or_beyond_256_copies() -> None:  # 2., 4.
    t = fxlower.Target(name="t", forbid={"Expand", "Concat"})
    low = lower_quiet(RepeatKv(), (KV,), target=t, on_forbidden="warn")
    assert [s.reason for s in skipped(low) if s.pass_name == PASS] == [
        "target 't' lacks Expand, and copies need Concat"]

    class Wide(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.expand(3, 300)

    low = lower_quiet(Wide(), (torch.randn(3, 1),), target="rknn2@1.4.0", on_forbidden="warn")
    assert [s.reason for s in skipped(low) if s.pass_name == PASS] == [
        "more than 256 copies (dim 1 to 300)"]


class Expanded(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(*self.shape) * 1  # (a use that needs the values)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.int64, torch.float16]),
       seed=st.integers(0, 2**16))
def test_property_against_expand_bit_for_bit(shape, data, dtype, seed) -> None:
    ones = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    src = tuple(1 if o else s for s, o in zip(shape, ones, strict=True))
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(src, generator=g) * 5).to(dtype)
    m = Expanded(lead + tuple(shape))
    low = lower_quiet(m, (x,), target="rknn2@1.4.0", verify=False)
    assert len(applied(low, PASS)) == 1  # (an expand to its own shape is a copy as well)
    assert torch.equal(low(x), m(x))


def test_refused_for_an_empty_result() -> None:  # 3.
    class Empty(nn.Module):
        def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            return x.expand(n.size(0), 3)

    x, n = torch.randn(1, 3), torch.zeros(0)
    low = lower_quiet(Empty(), (x, n), target="rknn2@1.4.0", on_forbidden="warn")
    assert [s.reason for s in skipped(low) if s.pass_name == PASS] == [
        "an empty result (no copy to make)"]
    assert torch.equal(low(x, n), Empty()(x, n))
