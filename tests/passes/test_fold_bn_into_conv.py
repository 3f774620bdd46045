"""fold_bn_into_conv: eval-mode BatchNorm folded into the conv / linear before it, for every
spelling (modules, functions, torch.export's aten.batch_norm and the decomposed
_native_batch_norm_legit_no_training); refusals with their reasons; a property test."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from fxlower.passes.fold_bn_into_conv import FoldBnIntoConv
from helpers import applied, lower_quiet, skipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxlower import graph
from fxlower.report import Report
from fxlower.rewrite import Context, Options, run_passes

TRACERS = ["symbolic_trace", "export"]
PASS = "fold_bn_into_conv"
BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def randomise(bn: nn.Module) -> nn.Module:
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.3, 3)
    if bn.weight is not None:
        bn.weight.data.uniform_(-2, 2)
        bn.bias.data.uniform_(-1, 1)
    return bn


def norms_left(gm: torch.fx.GraphModule) -> int:
    return sum(
        (n.op == "call_module" and isinstance(gm.get_submodule(n.target), BN))
        or (n.op == "call_function" and "batch_norm" in str(n.target))
        for n in gm.graph.nodes)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


def exact_in_float64(model: nn.Module, x: torch.Tensor, **kw) -> float:
    m64 = copy.deepcopy(model).double()
    low = lower_quiet(m64, (x.double(),), verify=False, **kw)
    with torch.no_grad():
        return rel_err(low(x.double()), m64(x.double()))


class ConvBn(nn.Module):
    def __init__(self, dims: int, **conv) -> None:
        super().__init__()
        self.conv = CONV[dims - 1](4, 6, 3, **conv)
        self.bn = randomise(BN[dims - 1](6))

    def forward(self, x):
        return self.bn(self.conv(x)).relu()


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_bn_is_folded(dims: int, tracer: str) -> None:
    model, x = ConvBn(dims, padding=1).eval(), torch.randn(2, 4, *([6] * dims))
    low = lower_quiet(model, (x,), tracer=tracer)
    (row,) = applied(low, PASS)
    assert f"into nn.Conv{dims}d 'conv' as 'conv__bn'" in row.detail or (
        tracer == "export" and "as 'conv__bn'" in row.detail)
    assert norms_left(low) == 0
    conv = low.get_submodule("conv__bn")
    assert type(conv) is CONV[dims - 1] and conv.bias is not None
    assert "self.conv__bn(" in low.code
    assert not hasattr(low, "bn")
    assert exact_in_float64(model, x, tracer=tracer) < 1e-14
    with torch.no_grad():
        assert rel_err(low(x), model(x)) < 1e-5


@pytest.mark.parametrize("conv", [
    dict(padding=1, padding_mode="reflect"), dict(padding=2, padding_mode="circular"),
    dict(groups=2, stride=2, dilation=2, bias=False),
], ids=["reflect", "circular", "grouped-strided"])
def test_padding_mode_groups_and_stride_are_kept(conv) -> None:
    model, x = ConvBn(2, **conv).eval(), torch.randn(1, 4, 9, 9)
    low = lower_quiet(model, (x,))
    c = low.get_submodule("conv__bn")
    for attr in ("padding", "padding_mode", "groups", "stride", "dilation"):
        assert getattr(c, attr) == getattr(model.conv, attr)
    assert exact_in_float64(model, x) < 1e-14


@pytest.mark.parametrize("tracer", TRACERS)
def test_linear_then_batchnorm1d(tracer: str) -> None:
    model = nn.Sequential(nn.Linear(8, 5, bias=False), randomise(nn.BatchNorm1d(5))).eval()
    x = torch.randn(7, 8)
    low = lower_quiet(model, (x,), tracer=tracer)
    assert len(applied(low, PASS)) == 1 and norms_left(low) == 0
    assert isinstance(low.get_submodule("m_0__1"), nn.Linear)
    assert exact_in_float64(model, x, tracer=tracer) < 1e-14


class Functional(nn.Module):
    def __init__(self, spelling: str) -> None:
        super().__init__()
        self.spelling = spelling
        self.w = nn.Parameter(torch.randn(6, 4, 3, 3))
        self.mean = nn.Buffer(torch.randn(6))
        self.var = nn.Buffer(torch.rand(6) + 0.5)
        self.g = nn.Parameter(torch.randn(6))
        self.b = nn.Parameter(torch.randn(6))

    def forward(self, x):
        y = F.conv2d(x, self.w, stride=2)
        if self.spelling == "F.batch_norm":
            return F.batch_norm(y, self.mean, self.var, self.g, self.b, eps=1e-3)
        if self.spelling == "affine-free":
            return F.batch_norm(y, self.mean, self.var)
        return torch.batch_norm(y, self.g, self.b, self.mean, self.var, False, 0.1, 1e-5, False)


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("spelling", ["F.batch_norm", "affine-free", "torch.batch_norm"])
def test_functional_spellings(spelling: str, tracer: str) -> None:
    model, x = Functional(spelling).eval(), torch.randn(2, 4, 9, 9)
    low = lower_quiet(model, (x,), tracer=tracer)
    (row,) = applied(low, PASS)
    seen = "aten." if tracer == "export" else spelling.replace("affine-free", "F.batch_norm")
    assert row.detail.startswith(f"folded {seen}")
    assert norms_left(low) == 0
    assert exact_in_float64(model, x, tracer=tracer) < 1e-14


def run_fold(gm: torch.fx.GraphModule, x: torch.Tensor) -> Report:
    graph.annotate(gm, (x,))
    report = Report()
    run_passes(gm, [FoldBnIntoConv()], Context(gm, Options(), True), report)
    return report


def test_decomposed_export_graph_native_batch_norm_no_training() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 3), randomise(nn.BatchNorm2d(6))).eval()
    x = torch.randn(2, 3, 8, 8)
    gm = torch.export.export(model, (x,), strict=False).run_decompositions().module()
    assert "_native_batch_norm_legit_no_training" in gm.code
    report = run_fold(gm, x)
    assert [a.pass_name for a in report.applied] == [PASS]
    assert "folded aten._native_batch_norm_legit_no_training '1' into aten.convolution '0'" in (
        report.applied[0].detail)
    assert "_native_batch_norm" not in gm.code and "getitem" not in gm.code
    with torch.no_grad():
        assert rel_err(gm(x), model(x)) < 1e-5


def test_decomposed_training_graph_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)).train()
    x = torch.randn(2, 3, 8, 8)
    gm = torch.export.export(copy.deepcopy(model), (x,), strict=False).run_decompositions().module()
    report = run_fold(gm, x)
    assert not report.applied
    (row,) = report.skipped
    assert "is a BatchNorm in training mode" in row.reason


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = randomise(nn.BatchNorm2d(4))

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("build,shape,reason", [
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train(), (2, 3, 5, 5),
     "'1' is a BatchNorm in training mode: it normalises with each batch's statistics"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 1),
                           nn.BatchNorm2d(4, track_running_stats=False)).eval(), (2, 3, 5, 5),
     "keeps no running statistics (track_running_stats=False)"),
    (lambda: Shared().eval(), (2, 3, 5, 5), "the output of 'conv' is also used by 'add'"),
    (lambda: nn.Sequential(nn.Linear(4, 3), randomise(nn.BatchNorm1d(3))).eval(), (2, 3, 4),
     "normalises dim 1 of the 3-D output of '0', not its features"),
], ids=["training", "no-running-stats", "shared", "linear-3d"])
def test_refusals(build, shape, reason, tracer) -> None:
    model = build()
    x = torch.randn(*shape)
    if shape == (2, 3, 4):  # BatchNorm1d over dim 1 of a (2, 3, 4) tensor: 3 channels
        x = torch.randn(2, 3, 3)
        model[0] = nn.Linear(3, 3)
    low = lower_quiet(model, (x,), tracer=tracer)
    assert not applied(low, PASS)
    assert norms_left(low) == 1
    (row,) = [s for s in skipped(low) if s.pass_name == PASS]
    assert reason in row.reason, row.reason


def test_linear_without_shapes_is_refused_and_conv_is_folded() -> None:
    lin = nn.Sequential(nn.Linear(4, 3), randomise(nn.BatchNorm1d(3))).eval()
    low = lower_quiet(lin, None)
    (row,) = skipped(low)
    assert "shapes unknown" in row.reason
    conv = ConvBn(2).eval()
    low = lower_quiet(conv, None)
    assert len(applied(low, PASS)) == 1


def test_the_users_model_is_not_modified() -> None:
    model = ConvBn(2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lower_quiet(model, (torch.randn(1, 4, 6, 6),))
    assert isinstance(model.bn, nn.BatchNorm2d)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dims=st.integers(0, 3), groups=st.sampled_from([1, 2]), bias=st.booleans(),
       affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-3, 0.1]),
       seed=st.integers(0, 2**16))
def test_random_folds_are_exact(dims, groups, bias, affine, eps, seed) -> None:
    torch.manual_seed(seed)
    if dims == 0:
        layer, x = nn.Linear(4, 6, bias=bias), torch.randn(3, 4)
        bn = nn.BatchNorm1d(6, eps=eps, affine=affine)
    else:
        layer = CONV[dims - 1](4, 6, 3, padding=1, groups=groups, bias=bias)
        bn = BN[dims - 1](6, eps=eps, affine=affine)
        x = torch.randn(2, 4, *([5] * dims))
    model = nn.Sequential(layer, randomise(bn)).eval()
    low = lower_quiet(model, (x,))
    assert len(applied(low, PASS)) == 1 and norms_left(low) == 0
    assert exact_in_float64(model, x) < 1e-13
