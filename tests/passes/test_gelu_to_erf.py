"""gelu_to_erf: for a target without Gelu (RKNN-Toolkit2, Kneron), GELU becomes Erf
arithmetic (rknn2@2.x), a float32 rational erf (rknn2@1.4.0, no Erf) or the tanh form;
each legality condition on both sides, and a property test of every form against F.gelu."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from fxlower.passes.gelu_to_erf import erf_rational, gelu
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower

PASS = "gelu_to_erf"


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.act(self.fc(x)) - 0.5, approximate="tanh")


X = torch.randn(3, 8) * 3


def _ops(model: nn.Module, target: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(model, (X,), os.path.join(d, "m.onnx"), target=target)
    return dict(report.onnx["op_counts"])


def test_erf_form_where_the_target_has_erf_and_the_file_shows_it() -> None:  # 1., 2.
    for tracer in ("symbolic_trace", "export"):
        m = Mlp().eval()
        low = lower_quiet(m, (X,), target="rknn2@2.x", tracer=tracer)
        details = sorted(a.detail for a in applied(low, PASS))
        assert len(details) == 2 and "Erf(x/sqrt 2)" in details[0] and "Tanh" in details[1]
        assert (low(X) - m(X)).abs().max() < 1e-5, tracer
    ops = _ops(Mlp().eval(), "rknn2@2.x")
    assert "Gelu" not in ops and ops["Erf"] == 1 and ops["Tanh"] == 1


def test_rational_erf_where_the_target_lacks_erf() -> None:  # 2.
    m = Mlp().eval()
    low = lower_quiet(m, (X,), target="rknn2@1.4.0")
    (a,) = [a for a in applied(low, PASS) if "rational" in a.detail]
    assert "not bit-exact" in a.detail
    assert (low(X) - m(X)).abs().max() < 1e-5
    ops = _ops(Mlp().eval(), "rknn2@1.4.0")
    assert "Gelu" not in ops and "Erf" not in ops and ops["Clip"] == 1 and ops["Div"] == 1


def test_kept_where_the_target_has_gelu_or_no_target_is_given() -> None:  # 1.
    assert applied(lower_quiet(Mlp().eval(), (X,)), PASS) == []
    assert applied(lower_quiet(Mlp().eval(), (X,), target="tidl"), PASS) == []  # TIDL lists Gelu


def test_refused_when_the_target_lacks_every_form() -> None:  # 2.
    t = fxlower.Target(name="no-div", forbid={"Gelu", "Erf", "Div", "Tanh"})
    low = lower_quiet(Mlp().eval(), (X,), target=t, on_forbidden="warn")
    reasons = sorted(s.reason for s in skipped(low) if s.pass_name == PASS)
    assert reasons == [
        "target 'no-div' lacks Gelu, and the erf form needs Erf; the rational form needs Div",
        "target 'no-div' lacks Gelu, and the tanh form needs Tanh"]


def test_refused_for_half_precision_and_float64_without_erf() -> None:  # 3.
    m = nn.Sequential(nn.GELU()).eval()
    low = lower_quiet(m.half(), (X.half(),), target="rknn2@2.x", on_forbidden="warn")
    (s,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert "torch.float16 input" in s.reason
    low = lower_quiet(m.double(), (X.double(),), target="rknn2@1.4.0", on_forbidden="warn")
    (s,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert "accurate to float32 only" in s.reason
    low = lower_quiet(m.double(), (X.double(),), target="rknn2@2.x")  # the Erf form is fine
    assert len(applied(low, PASS)) == 1


def test_rational_erf_is_within_four_eps_of_erf() -> None:
    x = torch.linspace(-6, 6, 200001)
    err = (erf_rational(x).double() - torch.erf(x.double())).abs()
    assert err.max() < 4.5e-7
    assert torch.equal(erf_rational(torch.tensor([-50.0, 0.0, 50.0])),
                       torch.tensor([-1.0, 0.0, 1.0]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       form=st.sampled_from(["erf", "rational", "tanh"]),
       scale=st.sampled_from([0.1, 1.0, 4.0, 100.0]), seed=st.integers(0, 2**16))
def test_property_every_form_against_gelu(shape, form, scale, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    ref = F.gelu(x, approximate="tanh" if form == "tanh" else "none")
    err = (gelu(x, form) - ref).abs() / x.abs().clamp_min(1)
    assert err.max() <= 1e-6
    # -0.0 and NaN pass through as in PyTorch; -inf gives NaN in both
    sp = torch.tensor([-0.0, float("nan"), -float("inf")])
    out = gelu(sp, form)
    assert torch.signbit(out[0]) and out[1:].isnan().all()
