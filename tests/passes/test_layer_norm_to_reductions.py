"""layer_norm_to_reductions: for a target without LayerNormalization (rknn2@1.4.0, Kneron,
TIDL), layer norm becomes ReduceMean/Sub/Mul/Add/Sqrt/Div; each legality condition on both
sides, and a property test against F.layer_norm."""

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

PASS = "layer_norm_to_reductions"


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.ln2 = nn.LayerNorm([4, 16], elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(torch.relu(self.ln(x)))


X = torch.randn(2, 4, 16)


def test_applied_for_a_target_without_layer_normalization_and_the_file_shows_it() -> None:
    for tracer in ("symbolic_trace", "export"):
        m = Two().eval()
        with torch.no_grad():
            m.ln.weight.normal_()
            m.ln.bias.normal_()
        low = lower_quiet(m, (X,), target="rknn2@1.4.0", tracer=tracer)
        assert len(applied(low, PASS)) == 2, tracer
        assert all("not bit-exact" in a.detail for a in applied(low, PASS))
        assert (low(X) - m(X)).abs().max() < 1e-5
        assert any(p.data_ptr() == m.ln.weight.data_ptr() for p in low.parameters())
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(Two().eval(), (X,), os.path.join(d, "m.onnx"),
                                target="rknn2@1.4.0")
    ops = report.onnx["op_counts"]
    assert "LayerNormalization" not in ops and ops["ReduceMean"] == 4 and ops["Sqrt"] == 2


def test_a_tiny_eps_survives_the_exporter_and_constant_rows_stay_finite() -> None:
    """torch's exporter (onnxscript's add_0 rule) deletes `x + c` for a scalar |c| <= 1e-8:
    with eps written as a scalar, a 1e-12 eps vanished and a constant row gave 0/0 = NaN in
    onnxruntime (DeiT and BEiT of the corpus on rknn2@1.4.0)."""
    m = nn.LayerNorm(16, eps=1e-12).eval()
    x = torch.randn(2, 4, 16)
    x[0, 1] = 3.0  # a constant row: variance 0
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        fxlower.export(m, (x,), path, target="rknn2@1.4.0")  # verifies in onnxruntime
        import onnxruntime as ort

        sess = ort.InferenceSession(path)
        out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert not torch.from_numpy(out).isnan().any()
    assert torch.allclose(torch.from_numpy(out), m(x), atol=1e-5)


def test_kept_where_the_op_exists_or_no_target_is_given() -> None:  # 1.
    assert applied(lower_quiet(Two().eval(), (X,)), PASS) == []
    assert applied(lower_quiet(Two().eval(), (X,), target="rknn2@2.x"), PASS) == []


def test_refused_when_the_target_lacks_the_pieces_too() -> None:  # 2.
    t = fxlower.Target(name="no-sqrt", forbid={"LayerNormalization", "Sqrt"})
    low = lower_quiet(Two().eval(), (X,), target=t, on_forbidden="warn")
    reasons = {s.reason for s in skipped(low) if s.pass_name == PASS}
    assert reasons == {"target 'no-sqrt' lacks Sqrt as well"}


def test_refused_for_half_precision_and_unknown_shapes() -> None:  # 3.
    m = nn.Sequential(nn.LayerNorm(8)).half().eval()
    low = lower_quiet(m, (torch.randn(2, 8).half(),), target="rknn2@1.4.0", on_forbidden="warn")
    (s,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert "torch.float16 input" in s.reason
    low = lower_quiet(Two().eval(), None, target="rknn2@1.4.0", verify=False,
                      on_forbidden="warn")
    assert {s.reason for s in skipped(low) if s.pass_name == PASS} == {
        "the input's shape is not known when lowering"}


def test_refused_for_a_weight_computed_at_run_time() -> None:  # 4.
    class Computed(nn.Module):
        def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return F.layer_norm(x, (16,), w * 2)

    low = lower_quiet(Computed().eval(), (X, torch.randn(16)), target="rknn2@1.4.0",
                      on_forbidden="warn")
    assert [s.reason for s in skipped(low) if s.pass_name == PASS] == [
        "the weight is computed at run time"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data(),
       affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-6, 1e-12]),
       scale=st.sampled_from([0.1, 1.0, 10.0]), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_property_against_layer_norm(shape, data, affine, eps, scale, seed, dtype) -> None:
    k = data.draw(st.integers(1, len(shape)))
    g = torch.Generator().manual_seed(seed)
    m = nn.LayerNorm(shape[-k:], eps=eps, elementwise_affine=affine).to(dtype).eval()
    if affine:
        with torch.no_grad():
            m.weight.copy_(torch.randn(shape[-k:], generator=g))
            m.bias.copy_(torch.randn(shape[-k:], generator=g))
    x = (torch.randn(shape, generator=g) * scale).to(dtype)
    low = lower_quiet(m, (x,), target="rknn2@1.4.0")
    report = fxlower.report_of(low)
    # applied and verified within the grounded tolerance, or rolled back (never wrong)
    assert len(applied(low, PASS)) + len(report.rolled_back) == 1
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert torch.allclose(low(x), m(x), rtol=tol, atol=tol)
