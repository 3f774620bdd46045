"""attention_to_matmul_softmax: for a target lacking an op of the exporter's attention
decomposition (IsNaN for a boolean mask on RKNN-Toolkit2), scaled_dot_product_attention
becomes MatMul/Softmax/MatMul with PyTorch's safe-softmax rows; each legality condition on
both sides, and a property test against F.scaled_dot_product_attention."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower

PASS = "attention_to_matmul_softmax"


class Attn(nn.Module):
    def __init__(self, **kw: object) -> None:
        super().__init__()
        self.kw = kw

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **self.kw)  # type: ignore[arg-type]


def _qkv(seed: int = 0, lq: int = 5, ls: int = 5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, lq, 8, generator=g), torch.randn(2, 3, ls, 8, generator=g),
            torch.randn(2, 3, ls, 4, generator=g))


def _bool_mask(seed: int = 0) -> torch.Tensor:
    m = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(seed)) > 0.4
    m[0, 0, 2] = False  # a fully masked row: PyTorch gives zeros
    return m


def test_boolean_mask_on_rknn2_and_the_file_has_no_isnan() -> None:  # 1., 2.
    q, k, v = _qkv()
    mask = _bool_mask()
    for tracer in ("symbolic_trace", "export"):
        low = lower_quiet(Attn(), (q, k, v, mask), target="rknn2@1.4.0", tracer=tracer)
        (a,) = applied(low, PASS)
        assert "boolean mask" in a.detail and "needs IsNaN" in a.detail, tracer
        q2, k2, v2 = _qkv(1)
        out, ref = low(q2, k2, v2, _bool_mask(1)), Attn()(q2, k2, v2, _bool_mask(1))
        assert (out - ref).abs().max() < 1e-5
        assert torch.equal(out[0, :, 2], torch.zeros(3, 4))  # the fully masked row
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(Attn(), (q, k, v, mask), os.path.join(d, "m.onnx"),
                                target="rknn2@1.4.0")
    ops = report.onnx["op_counts"]
    assert "IsNaN" not in ops and ops["Softmax"] == 1 and ops["ReduceMax"] == 1


class ConstantMask(nn.Module):
    """ViT's: transformers builds an all-true boolean mask from constants."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).expand(q.shape[0], 1, -1, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_a_constant_all_true_mask_is_dropped_even_on_tidl() -> None:  # 0.
    q, k, v = _qkv()
    for target in ("tidl", "rknn2@1.4.0"):  # TIDL has no Where: the mask-free form needs none
        low = lower_quiet(ConstantMask(), (q, k, v), target=target, tracer="export")
        (a,) = applied(low, PASS)
        assert "all-true boolean mask dropped" in a.detail
        assert torch.equal(low(q, k, v), ConstantMask()(q, k, v))
        with tempfile.TemporaryDirectory() as d:
            report = fxlower.export(ConstantMask(), (q, k, v), os.path.join(d, "m.onnx"),
                                    target=target, tracer="export")
        ops = report.onnx["op_counts"]
        assert "Where" not in ops and "IsNaN" not in ops and ops["Softmax"] == 1
    m = _bool_mask()  # not all true: the decomposition, which TIDL cannot take (no Where)
    low = lower_quiet(Attn(), (q, k, v, m), target="tidl", on_forbidden="warn")
    assert [s.reason for s in skipped(low) if s.pass_name == PASS] == [
        "target 'tidl' lacks Equal, ReduceMax, Where, which attention needs in any formulation"]


def test_kept_where_the_target_has_every_op_of_the_exporters_form() -> None:  # 1.
    q, k, v = _qkv()
    assert applied(lower_quiet(Attn(), (q, k, v, _bool_mask())), PASS) == []
    # no mask / a float mask: the exporter's form uses no IsNaN, rknn2 has all of it
    assert applied(lower_quiet(Attn(), (q, k, v), target="rknn2@1.4.0"), PASS) == []
    fmask = torch.zeros(2, 1, 5, 5)
    assert applied(lower_quiet(Attn(), (q, k, v, fmask), target="rknn2@1.4.0"), PASS) == []


def test_float_causal_and_no_mask_for_a_target_without_sqrt() -> None:  # 1.
    t = fxlower.Target(name="no-sqrt", forbid={"Sqrt"})
    q, k, v = _qkv(lq=4, ls=6)
    fmask = torch.randn(2, 1, 4, 6)
    fmask[1, 0, 0] = -float("inf")  # a fully masked row in a float mask
    cases = [(Attn(), (q, k, v)), (Attn(), (q, k, v, fmask)),
             (Attn(is_causal=True), (q, k, v)), (Attn(scale=0.3), (q, k, v, fmask > 0))]
    for m, inputs in cases:  # (symbolic_trace keeps an omitted mask=None as a placeholder)
        low = lower_quiet(m, inputs, target=t, tracer="export")
        assert len(applied(low, PASS)) == 1
        out, ref = low(*inputs), m(*inputs)
        assert (out - ref).abs().max() < 1e-5
        assert not out.isnan().any() and not ref.isnan().any()


def test_refused_when_the_target_lacks_softmax_or_reducemax() -> None:  # 2.
    t = fxlower.Target(name="t", forbid={"IsNaN", "ReduceMax"})
    q, k, v = _qkv()
    low = lower_quiet(Attn(), (q, k, v, _bool_mask()), target=t, on_forbidden="warn")
    assert [s.reason for s in skipped(low) if s.pass_name == PASS] == [
        "target 't' lacks ReduceMax, which attention needs in any formulation"]


def test_refused_for_half_precision_dropout_and_grouped_query() -> None:  # 3., 4.
    q, k, v = _qkv()
    mask = _bool_mask()
    cases = [
        (Attn(), (q.half(), k.half(), v.half(), mask), "torch.float16 attention"),
        (Attn(dropout_p=0.1), (q, k, v, mask), "dropout_p=0.1"),
        (Attn(enable_gqa=True), (q, k[:, :1], v[:, :1], mask), "enable_gqa"),
    ]
    for m, inputs, why in cases:
        low = lower_quiet(m, inputs, target="rknn2@1.4.0", on_forbidden="warn", verify=False)
        reasons = [s.reason for s in skipped(low) if s.pass_name == PASS]
        assert len(reasons) == 1 and why in reasons[0], (why, reasons)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lq=st.integers(1, 7), ls=st.integers(1, 7), e=st.integers(1, 9),
       heads=st.integers(1, 3), kind=st.sampled_from(["bool", "float", "causal", "none"]),
       scale=st.sampled_from([None, 0.05, 1.0]), big=st.sampled_from([1.0, 30.0]),
       seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_property_against_sdpa(lq, ls, e, heads, kind, scale, big, seed, dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(2, heads, lq, e, generator=g) * big).to(dtype)
    k = (torch.randn(2, heads, ls, e, generator=g) * big).to(dtype)
    v = torch.randn(2, heads, ls, e, generator=g).to(dtype)
    inputs: tuple[torch.Tensor, ...] = (q, k, v)
    if kind == "bool":
        inputs += (torch.rand(2, 1, lq, ls, generator=g) > 0.5,)  # fully masked rows happen
    elif kind == "float":
        m = torch.randn(2, 1, lq, ls, generator=g).to(dtype)
        inputs += (m.masked_fill(torch.rand(2, 1, lq, ls, generator=g) > 0.6, -float("inf")),)
    model = Attn(is_causal=kind == "causal", **({} if scale is None else {"scale": scale}))
    t = fxlower.Target(name="no-isnan-sqrt", forbid={"IsNaN", "Sqrt"})
    low = lower_quiet(model, inputs, target=t, tracer="export")
    report = fxlower.report_of(low)
    assert len(applied(low, PASS)) + len(report.rolled_back) == 1
    out, ref = low(*inputs), model(*inputs)
    assert torch.equal(out.isnan(), ref.isnan())
    # rounding-level: against the float64 truth, within a few times PyTorch's own error
    truth = model(*(t.double() if t.is_floating_point() else t for t in inputs))
    scale_ = max(1.0, float(v.abs().max()))
    own = float((ref.double() - truth).abs().max()) / scale_
    ours = float((out.double() - truth).abs().max()) / scale_
    assert ours <= 4 * own + (1e-12 if dtype == torch.float64 else 1e-6)
