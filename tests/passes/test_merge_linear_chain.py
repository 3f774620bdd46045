"""merge_linear_chain: chains of linear layers merged into one nn.Linear through
fxlower.lower on both capture paths; the cost rule with both counts; refusals with their
reasons; the ONNX file; and a property test drawing random chains."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fxlower
from fxlower.api import onnx_export
from fxlower.errors import VerificationError

aten = torch.ops.aten
TRACERS = ["symbolic_trace", "export"]
PASS = "merge_linear_chain"


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def linear_layers(gm: torch.fx.GraphModule) -> list[str]:
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Linear):
            out.append(str(n.target))
        elif n.op == "call_function" and n.target in (F.linear, aten.linear.default):
            out.append(n.name)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


def exact_in_float64(model: nn.Module, x: torch.Tensor, **kw) -> float:
    m64 = copy.deepcopy(model).double()
    low = lower_quiet(m64, (x.double(),), verify=False, **kw)
    with torch.no_grad():
        return rel_err(low(x.double()), m64(x.double()))


class Two(nn.Module):
    def __init__(self, a: int, b: int, c: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(a, b, bias=bias), nn.Linear(b, c, bias=bias)

    def forward(self, x):
        return self.fc2(self.fc1(x))


@pytest.mark.parametrize("tracer", TRACERS)
def test_narrowing_middle_merges(tracer: str) -> None:
    model, x = Two(64, 48, 32).eval(), torch.randn(5, 64)
    low = lower_quiet(model, (x,), tracer=tracer)
    (row,) = applied(low, PASS)
    # chain 5*(64*48 + 48*32) = 23,040 multiply-adds, merged 5*64*32 = 10,240
    assert "4,608 -> 2,048 weights, MACs 23,040 -> 10,240 per call" in row.detail
    assert linear_layers(low) == ["fc1__fc2"]
    fc = low.get_submodule("fc1__fc2")
    assert type(fc) is nn.Linear and (fc.in_features, fc.out_features) == (64, 32)
    assert "self.fc1__fc2(" in low.code
    assert exact_in_float64(model, x, tracer=tracer) < 1e-14
    with torch.no_grad():
        assert rel_err(low(x), model(x)) < 1e-5


@pytest.mark.parametrize("tracer", TRACERS)
def test_low_rank_pair_is_left_alone_with_both_counts(tracer: str) -> None:
    model, x = Two(256, 16, 256).eval(), torch.randn(5, 256)
    low = lower_quiet(model, (x,), tracer=tracer)
    assert len(linear_layers(low)) == 2
    (row,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert ("would cost 327,680 multiply-adds per call instead of 40,960: left apart "
            "(merge='always' merges it)") in row.reason
    forced = lower_quiet(model, (x,), tracer=tracer, merge="always")
    (a,) = applied(forced, PASS)
    assert a.macs == 327_680 - 40_960
    assert len(linear_layers(forced)) == 1
    assert exact_in_float64(model, x, tracer=tracer, merge="always") < 1e-13


def test_three_and_more_collapse_and_batched_rows_count() -> None:
    model = nn.Sequential(nn.Linear(12, 10), nn.Linear(10, 8, bias=False), nn.Linear(8, 6),
                          nn.Linear(6, 4)).eval()
    x = torch.randn(2, 3, 12)  # any leading dims: 6 rows
    low = lower_quiet(model, (x,))
    (row,) = applied(low, PASS)
    assert "merged 4 linear layers (0, 1, 2, 3) into '0__1__2__3'" in row.detail
    assert "272 -> 48 weights, MACs 1,632 -> 288 per call" in row.detail  # 6 rows each
    assert linear_layers(low) == ["m_0__1__2__3"]
    assert exact_in_float64(model, x) < 1e-14


def test_optimal_split_of_a_chain_with_a_bottleneck() -> None:
    # 64 -> 60 -> 4 -> 64 -> 60: merging 64->60->4 into 64->4 saves, crossing the 4-wide
    # bottleneck costs more; the best split is (0,1) | (2,3).
    model = nn.Sequential(nn.Linear(64, 60), nn.Linear(60, 4), nn.Linear(4, 64),
                          nn.Linear(64, 60)).eval()
    x = torch.randn(3, 64)
    low = lower_quiet(model, (x,))
    rows = applied(low, PASS)
    assert [r.detail.split(" into ")[0] for r in rows] == [
        "merged 2 linear layers (0, 1)", "merged 2 linear layers (2, 3)"]
    (left,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert "merging 'm_0__1' and '2__3' into one linear layer would cost" in left.reason
    assert len(linear_layers(low)) == 2
    assert exact_in_float64(model, x) < 1e-13


@pytest.mark.parametrize("tracer", TRACERS)
def test_functional_spelling_and_batchnorm_between(tracer: str) -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(16, 8))
            self.bn = nn.BatchNorm1d(16)
            self.fc = nn.Linear(16, 4)
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

        def forward(self, x):
            return self.fc(self.bn(F.linear(x, self.w)))

    model, x = M().eval(), torch.randn(6, 8)
    low = lower_quiet(model, (x,), tracer=tracer)
    assert len(applied(low, "fold_bn_into_conv")) == 1
    (row,) = applied(low, PASS)
    assert "merged 2 linear layers" in row.detail
    assert len(linear_layers(low)) == 1
    with torch.no_grad():
        assert rel_err(low(x), model(x)) < 1e-5


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h) + h.sum(-1, keepdim=True)


class FromInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.w = nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        return F.linear(self.fc1(x), self.w * x.mean())


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("build,reason", [
    (Shared, "the output of 'fc1' is also used by 'sum"),
    (FromInput, "is computed from the model's inputs, not a constant"),
], ids=["shared", "weight-from-input"])
def test_refusals_name_the_cause(build, reason, tracer) -> None:
    model, x = build().eval(), torch.randn(3, 8)
    low = lower_quiet(model, (x,), tracer=tracer, merge="always")
    assert len(linear_layers(low)) == 2
    (row,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert reason in row.reason


def test_merge_never() -> None:
    low = lower_quiet(Two(8, 8, 4).eval(), (torch.randn(2, 8),), merge="never")
    assert len(linear_layers(low)) == 2 and not fxlower.report_of(low).applied


def test_onnx_has_one_gemm_and_matches(tmp_path) -> None:
    model, x = Two(64, 48, 32).eval(), torch.randn(5, 64)
    low = lower_quiet(model, (x,))
    path = tmp_path / "low.onnx"
    onnx_export(low, (x,), path)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert sum(op in ("Gemm", "MatMul") for op in ops) == 1
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fresh = torch.randn(5, 64)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: fresh.numpy()})
    with torch.no_grad():
        assert rel_err(torch.from_numpy(np.asarray(got)), model(fresh)) < 1e-5


def lowered_macs(low: torch.fx.GraphModule, x: torch.Tensor) -> int:
    rows = x.numel() // x.shape[-1]
    return sum(rows * m.in_features * m.out_features
               for m in low.modules() if isinstance(m, nn.Linear))


def cheapest_split(model: nn.Module, x: torch.Tensor) -> int:
    """Brute force: the fewest multiply-adds over every way of merging runs of the chain."""
    feats = [m.in_features for m in model if isinstance(m, nn.Linear)]
    feats.append([m for m in model if isinstance(m, nn.Linear)][-1].out_features)
    rows, n = x.numel() // x.shape[-1], len(feats) - 1
    best = None
    for cuts in range(2 ** (n - 1)):
        bounds = [0] + [i + 1 for i in range(n - 1) if cuts >> i & 1] + [n]
        cost = sum(rows * feats[a] * feats[b] for a, b in zip(bounds, bounds[1:], strict=False))
        best = cost if best is None else min(best, cost)
    return best


@st.composite
def linear_chains(draw):
    n = draw(st.integers(2, 4))
    feats = [draw(st.sampled_from([1, 2, 3, 5, 8, 16, 32])) for _ in range(n + 1)]
    rank = draw(st.sampled_from([2, 3]))
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Linear(feats[i], feats[i + 1], bias=draw(st.booleans())))
        if rank == 2 and draw(st.integers(0, 3)) == 0:
            layers.append(nn.BatchNorm1d(feats[i + 1]))
    merge = draw(st.sampled_from(["auto", "always"]))
    rows = draw(st.integers(1, 4))
    return n, layers, feats[0], rank, rows, merge, draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linear_chains())
def test_random_linear_chains_merge_exactly_or_say_why(chain) -> None:
    n, layers, f0, rank, rows, merge, seed = chain
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(rows, f0) if rank == 2 else torch.randn(rows, 2, f0)
    try:
        low = lower_quiet(model, (x,), merge=merge)
    except VerificationError:  # output-relative tolerance vs cancellation: see the conv test
        event("fp32 error above fxlower's output-relative tolerance")
        low = lower_quiet(model, (x,), merge=merge, verify=False)
    applied_rows = applied(low, PASS)
    refused = [s for s in skipped(low) if s.pass_name == PASS]
    merged = sum(int(r.detail.split()[1]) - 1 for r in applied_rows)
    event(f"{merged} of {n - 1} links merged")
    assert merged + len(refused) == n - 1
    assert all("would cost" in s.reason for s in refused)  # linear merges are always exact
    assert len(linear_layers(low)) == n - merged
    if merge == "always":
        assert merged == n - 1
    else:
        assert all(r.macs == 0 for r in applied_rows)
        assert lowered_macs(low, x) == cheapest_split(model, x)
    if applied_rows:
        assert exact_in_float64(model, x, merge=merge) < 1e-11
    with torch.no_grad():
        y = model(x)
        assert float((low(x) - y).abs().max()) <= 1e-5 * max(1.0, float(y.abs().max()))
