"""merge_conv_chain: chains of convolutions merged into one conv through fxlower.lower, on
both capture paths; every legality condition on both sides; the cost rule; ONNX Conv counts
through onnxruntime; and a property test drawing random chains ("merged and equal, or
refused with a reason")."""

from __future__ import annotations

import copy
import dataclasses

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
from torch.utils import _pytree as pytree

import fxlower
from fxlower.api import onnx_export
from fxlower.errors import VerificationError
from fxlower.kernels import linear as lo

aten = torch.ops.aten
TRACERS = ["symbolic_trace", "export"]
PASS = "merge_conv_chain"
_CONV_FNS = {torch.conv1d, torch.conv2d, torch.conv3d, aten.conv1d.default,
             aten.conv2d.default, aten.conv3d.default, aten.convolution.default,
             aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding}


def conv_layers(gm: torch.fx.GraphModule) -> list[str]:
    """The conv layers left in a lowered graph (modules and function / ATen calls)."""
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target),
                                                (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            out.append(str(n.target))
        elif n.op == "call_function" and n.target in _CONV_FNS:
            out.append(n.name)
    return out


def merged_module(gm: torch.fx.GraphModule) -> nn.Module:
    (name,) = conv_layers(gm)
    return gm.get_submodule(name)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


def exact_in_float64(model: nn.Module, x: torch.Tensor, **kw) -> float:
    """Lower a float64 copy (weights composed and kept in float64) and return its relative
    error against the float64 chain."""
    m64 = copy.deepcopy(model).double()
    low = lower_quiet(m64, (x.double(),), verify=False, **kw)
    with torch.no_grad():
        return rel_err(low(x.double()), m64(x.double()))


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def randomise_bn(m: nn.Module) -> nn.Module:
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-1, 1)
    return m


# --------------------------------------------------------------------------- models


class StackOverflow(nn.Module):
    """Stack Overflow 58357815, as written there: F.conv2d with parameter kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.k1 = nn.Parameter(torch.randn(100, 1, 3, 3))
        self.k2 = nn.Parameter(torch.randn(2, 100, 5, 5))

    def forward(self, x):
        return F.conv2d(F.conv2d(x, self.k1, padding=2), self.k2, padding=4)


class Pair(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2 = a, b

    def forward(self, x):
        return self.conv2(self.conv1(x))


class SharedIntermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        return self.conv2(y), y.relu()


class RuntimeWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.w = nn.Parameter(torch.randn(4, 4, 1, 1))

    def forward(self, x):
        return F.conv2d(self.conv1(x), self.w * x.mean())


def pair(a: nn.Module, b: nn.Module) -> nn.Module:
    return Pair(a, b).eval()


# --------------------------------------------------------------------------- the example


@pytest.mark.parametrize("tracer", TRACERS)
def test_stack_overflow_example_becomes_one_7x7_conv(tracer: str) -> None:
    model, x = StackOverflow(), torch.randn(1, 1, 28, 28)
    low = lower_quiet(model, (x,), tracer=tracer)
    (row,) = applied(low, PASS)
    assert "5,900 -> 98 weights" in row.detail
    assert "MACs 6,590,000 -> 113,288 per call" in row.detail
    conv = merged_module(low)
    assert type(conv) is nn.Conv2d
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding,
            conv.stride, conv.bias) == (1, 2, (7, 7), (6, 6), (1, 1), None)
    assert sum(p.numel() for p in low.parameters()) == 98
    with torch.no_grad():
        err32 = rel_err(low(x), model(x))
    assert err32 < 2e-6  # fp32 rounding of a different summation order
    assert exact_in_float64(model, x, tracer=tracer) < 1e-14
    assert sum(p.numel() for p in model.parameters()) == 5900  # the user's model is untouched


def test_stack_overflow_with_modules_reads_like_a_hand_written_model() -> None:
    model = pair(nn.Conv2d(1, 100, 3, padding=2, bias=False),
                 nn.Conv2d(100, 2, 5, padding=4, bias=False))
    x = torch.randn(1, 1, 28, 28)
    low = lower_quiet(model, (x,))
    assert conv_layers(low) == ["conv1__conv2"]
    assert "self.conv1__conv2(x)" in low.code
    assert not hasattr(low, "conv1") and not hasattr(low, "conv2")
    assert isinstance(model.conv1, nn.Conv2d)  # not modified


# --------------------------------------------------------------------------- merges


@pytest.mark.parametrize("tracer", TRACERS)
def test_conv_bn_conv_collapses(tracer: str) -> None:
    model = randomise_bn(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16),
                                       nn.Conv2d(16, 8, 1)).eval())
    x = torch.randn(2, 3, 12, 12)
    low = lower_quiet(model, (x,), tracer=tracer)
    assert len(applied(low, "fold_bn_into_conv")) == 1
    (row,) = applied(low, PASS)
    assert "merged 2 convs" in row.detail
    conv = merged_module(low)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (
        3, 8, (3, 3), (1, 1))
    assert not [n for n in low.graph.nodes if "batch_norm" in str(n.target)]
    with torch.no_grad():
        assert rel_err(low(x), model(x)) < 1e-5


def test_diverse_branch_block_1x1_then_kxk() -> None:
    model = pair(nn.Conv2d(8, 16, 1, bias=False), nn.Conv2d(16, 16, 3, padding=1))
    x = torch.randn(2, 8, 10, 10)
    low = lower_quiet(model, (x,))
    conv = merged_module(low)
    assert (conv.kernel_size, conv.padding, conv.bias is not None) == ((3, 3), (1, 1), True)
    assert exact_in_float64(model, x) < 1e-13


@pytest.mark.parametrize("n", [3, 4])
def test_longer_chains_collapse_to_one_conv(n: int) -> None:
    chans = [3, 8, 8, 6, 4][: n + 1]
    layers = [nn.Conv2d(chans[i], chans[i + 1], 1) for i in range(n)]
    layers[-1] = nn.Conv2d(chans[n - 1], chans[n], 3)  # 1x1 ... 1x1 -> 3x3 (no padding)
    model = nn.Sequential(*layers).eval()
    x = torch.randn(1, 3, 9, 9)
    low = lower_quiet(model, (x,))
    (row,) = applied(low, PASS)
    assert f"merged {n} convs" in row.detail
    assert conv_layers(low) == ["m_" + "__".join(str(i) for i in range(n))]
    assert exact_in_float64(model, x) < 1e-13


def test_triple_cheaper_merged_is_merged_though_its_first_pair_is_not() -> None:
    # 3x3 16->16 then 3x3 16->16: the pair alone (a 5x5 16->16) costs more than the two;
    # with a 1x1 16->1 after them, all three (a 5x5 16->1) cost far less.
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3),
                          nn.Conv2d(16, 1, 1)).eval()
    x = torch.randn(1, 16, 12, 12)
    alone = lower_quiet(nn.Sequential(*list(model)[:2]).eval(), (x,))
    assert len(conv_layers(alone)) == 2 and "would cost" in skipped(alone)[0].reason
    low = lower_quiet(model, (x,))
    (row,) = applied(low, PASS)
    assert "merged 3 convs" in row.detail
    assert merged_module(low).kernel_size == (5, 5)
    assert exact_in_float64(model, x) < 1e-13


GEOMETRIES = [
    # (dims, conv a kwargs, conv b kwargs, expected merged (kernel, stride, padding, dilation, groups))
    (1, dict(k=3, stride=2), dict(k=3), ((7,), (2,), (0,), (1,), 1)),
    (1, dict(k=3, stride=2), dict(k=3, stride=2, dilation=2), ((11,), (4,), (0,), (1,), 1)),
    (2, dict(k=3, dilation=2), dict(k=3, dilation=2), ((5, 5), (1, 1), (0, 0), (2, 2), 1)),
    (2, dict(k=3, dilation=2), dict(k=2, dilation=3), ((8, 8), (1, 1), (0, 0), (1, 1), 1)),
    (2, dict(k=1, stride=2, bias=False), dict(k=3, padding=1), ((5, 5), (2, 2), (2, 2), (1, 1), 1)),
    (2, dict(k=3, groups=2), dict(k=3, groups=2), ((5, 5), (1, 1), (0, 0), (1, 1), 2)),
    (2, dict(k=3, groups=4), dict(k=1, groups=2), ((3, 3), (1, 1), (0, 0), (1, 1), 2)),
    (2, dict(k=3, groups=4, padding=2, bias=False), dict(k=3, groups=4, padding=1),
     ((5, 5), (1, 1), (3, 3), (1, 1), 4)),  # depthwise -> depthwise stays depthwise
    (3, dict(k=3), dict(k=2, stride=2), ((4, 4, 4), (2, 2, 2), (0, 0, 0), (1, 1, 1), 1)),
    (3, dict(k=1, bias=False), dict(k=3, padding=1, groups=2),
     ((3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1)),
    # a strided conv whose padding covers its receptive field minus the stride (3d condition)
    (1, dict(k=3, stride=2, padding=1, bias=False), dict(k=3, padding=1),
     ((7,), (2,), (3,), (1,), 1)),
]


def make_conv(dims: int, cin: int, cout: int, k: int, stride=1, padding=0, dilation=1,
              groups=1, bias=True, padding_mode="zeros") -> nn.Module:
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    return cls(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
               groups=groups, bias=bias, padding_mode=padding_mode)


@pytest.mark.parametrize("dims,a,b,expect", GEOMETRIES)
def test_strides_dilations_groups_merge_exactly(dims, a, b, expect) -> None:
    model = pair(make_conv(dims, 4, 4, **a), make_conv(dims, 4, 4, **b))
    x = torch.randn(2, 4, *([15] * dims if dims < 3 else [9] * 3))
    low = lower_quiet(model, (x,), merge="always")
    assert len(applied(low, PASS)) == 1, skipped(low)
    conv = merged_module(low)
    assert (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) == expect
    assert exact_in_float64(model, x, merge="always") < 1e-13


def test_reflect_padding_of_the_first_conv_is_kept_when_the_second_does_not_pad() -> None:
    model = pair(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    low = lower_quiet(model, (x,))
    conv = merged_module(low)
    assert (conv.padding_mode, conv.padding) == ("reflect", (1, 1))
    assert exact_in_float64(model, x) < 1e-13


def test_right_border_with_stride_depends_on_the_input_size() -> None:
    # conv1: k3 s2 p1 covers the left border (needs p >= 2 - 2 + 1); on the right it reads
    # real inputs for even lengths and only padding for odd ones.
    model = pair(nn.Conv1d(2, 4, 3, stride=2, padding=1, bias=False), nn.Conv1d(4, 2, 3, padding=1))
    odd = lower_quiet(model, (torch.randn(1, 2, 7),))
    assert len(applied(odd, PASS)) == 1
    assert exact_in_float64(model, torch.randn(1, 2, 7)) < 1e-13
    even = lower_quiet(model, (torch.randn(1, 2, 8),))
    assert not applied(even, PASS)
    assert "at the right border" in skipped(even)[0].reason


def test_without_example_inputs_costs_are_per_output_position() -> None:
    model = pair(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1))
    low = lower_quiet(model, None)
    (row,) = applied(low, PASS)
    assert "per output position (shapes unknown)" in row.detail
    x = torch.randn(1, 3, 7, 7)
    with torch.no_grad():
        assert rel_err(low(x), model(x)) < 1e-5


@pytest.mark.parametrize("tracer", TRACERS)
def test_functional_and_module_spellings_mix(tracer: str) -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 1, bias=False)
            self.k = nn.Parameter(torch.randn(8, 8, 3, 3))
            self.b = nn.Parameter(torch.randn(8))
            self.conv3 = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.conv3(F.conv2d(self.conv1(x), self.k, self.b, padding=1))

    model, x = Mixed().eval(), torch.randn(1, 3, 9, 9)
    low = lower_quiet(model, (x,), tracer=tracer)
    (row,) = applied(low, PASS)
    assert "merged 3 convs" in row.detail
    assert len(conv_layers(low)) == 1
    assert exact_in_float64(model, x, tracer=tracer) < 1e-13


# --------------------------------------------------------------------------- refusals


# (case, model, reason, reason on the torch.export path where it differs). torch.export
# writes padding_mode='reflect' as a separate aten.pad before a conv with padding 0, so a
# reflect-padded second conv is no longer fed by the first conv at all, and a
# reflect-padded first conv has no padding of its own.
REFUSED = [
    ("bias and padding", lambda: pair(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)),
     "'conv2' zero-pads its input (padding 1) and 'conv1' adds a bias: border outputs would change",
     ...),
    ("padding does not cover", lambda: pair(nn.Conv2d(4, 4, 3, padding=1, bias=False),
                                            nn.Conv2d(4, 4, 3, padding=1)),
     "'conv1''s padding 1 does not cover its receptive field (needs >= 2", ...),
    ("no padding, second pads", lambda: pair(nn.Conv2d(4, 4, 3, bias=False),
                                             nn.Conv2d(4, 4, 1, padding=1)),
     "does not cover its receptive field", ...),
    ("reflect on the second", lambda: pair(nn.Conv2d(4, 4, 1, bias=False),
                                           nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")),
     "'conv2' pads its input with padding_mode='reflect'", None),
    ("reflect on the first", lambda: pair(nn.Conv2d(4, 4, 3, padding=2, bias=False,
                                                    padding_mode="reflect"),
                                          nn.Conv2d(4, 4, 3, padding=1)),
     "'conv1' pads with padding_mode='reflect': border outputs would change",
     "'conv1''s padding 0 does not cover its receptive field"),
    ("shared intermediate", SharedIntermediate, "the output of 'conv1' is also used by 'relu'", ...),
    ("weight from inputs", RuntimeWeight, "is computed from the model's inputs, not a constant", ...),
    ("same padding, even kernel", lambda: pair(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 2, padding="same")),
     "padding='same' with an even kernel, which pads asymmetrically", ...),
]


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("case,build,reason,export_reason", REFUSED, ids=[r[0] for r in REFUSED])
def test_inexact_pairs_are_left_alone_with_a_reason(case, build, reason, export_reason,
                                                    tracer) -> None:
    model = build().eval()
    x = torch.randn(1, model.conv1.in_channels, 8, 8)
    low = lower_quiet(model, (x,), tracer=tracer, merge="always")
    assert not applied(low, PASS)
    assert len(conv_layers(low)) == 2
    rows = [s for s in skipped(low) if s.pass_name == PASS]
    if tracer == "export" and export_reason is not ...:
        reason = export_reason
    if reason is None:
        assert not rows
    else:
        assert len(rows) == 1
        assert reason in rows[0].reason, rows[0].reason
    with torch.no_grad():
        for got, want in zip(pytree.tree_leaves(low(x)), pytree.tree_leaves(model(x)), strict=True):
            assert torch.equal(got, want)  # the same ops, untouched


def test_a_refused_border_merge_would_really_differ() -> None:
    """The border condition is not over-cautious: the naive merge of a padded, biased pair
    is wrong at the borders and right inside."""
    torch.manual_seed(0)
    a, b = nn.Conv2d(2, 2, 3, padding=2).double(), nn.Conv2d(2, 2, 3, padding=1).double()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    ga = lo.Geom(2, 2, 2, 1, (3, 3), (1, 1), (2, 2), (1, 1), "zeros", True, False, torch.float64)
    gb = dataclasses.replace(ga, padding=(1, 1))
    assert "adds a bias" in lo.compose_geom(ga, gb, "a", "b")
    m = lo.compose_geom(dataclasses.replace(ga, bias_zero=True), gb, "a", "b")  # pretend
    assert isinstance(m, lo.Geom)
    w, bias = lo.compose_weights(a.weight, a.bias, ga, b.weight, b.bias, gb, m)
    naive = F.conv2d(x, w, bias, padding=m.padding)
    with torch.no_grad():
        chain = b(a(x))
    diff = (naive - chain).abs()
    assert diff[..., 1:-1, 1:-1].max() < 1e-12  # exact where conv2 reads no padding
    assert diff.max() > 1e-3  # the border is not


@pytest.mark.parametrize("tracer", TRACERS)
def test_depthwise_then_pointwise_is_left_alone_for_cost(tracer: str) -> None:
    model = pair(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Conv2d(32, 64, 1))
    x = torch.randn(1, 32, 16, 16)
    low = lower_quiet(model, (x,), tracer=tracer)
    assert len(conv_layers(low)) == 2
    (row,) = [s for s in skipped(low) if s.pass_name == PASS]
    # chain: 16*16*(32*9 + 64*32) = 598,016; merged dense 3x3: 16*16*64*32*9 = 4,718,592
    assert "would cost 4,718,592 multiply-adds per call instead of 598,016" in row.reason
    forced = lower_quiet(model, (x,), tracer=tracer, merge="always")
    (a,) = applied(forced, PASS)
    assert a.macs == 4_718_592 - 598_016
    assert merged_module(forced).groups == 1
    assert exact_in_float64(model, x, tracer=tracer, merge="always") < 1e-13


def test_merge_never_leaves_convs_and_batchnorm_alone() -> None:
    model = randomise_bn(nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8),
                                       nn.Conv2d(8, 4, 1)).eval())
    low = lower_quiet(model, (torch.randn(1, 3, 5, 5),), merge="never")
    assert len(conv_layers(low)) == 2
    assert not fxlower.report_of(low).applied and not skipped(low)


def test_training_batchnorm_between_convs_blocks_the_merge() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)).train()
    low = lower_quiet(model, (torch.randn(2, 3, 5, 5),))
    assert len(conv_layers(low)) == 2
    (row,) = skipped(low)
    assert row.pass_name == "fold_bn_into_conv" and "training mode" in row.reason


# --------------------------------------------------------------------------- ONNX


def onnx_convs(path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


ONNX_CASES = {
    "stack_overflow": (lambda: StackOverflow(), (1, 1, 28, 28), 2, 1),
    "conv_bn_conv": (lambda: randomise_bn(nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Conv2d(16, 8, 1)).eval()),
        (2, 3, 12, 12), 2, 1),
    "dbb": (lambda: pair(nn.Conv2d(8, 16, 1, bias=False), nn.Conv2d(16, 16, 3, padding=1)),
            (1, 8, 10, 10), 2, 1),
    "mobilenet": (lambda: pair(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Conv2d(32, 64, 1)),
                  (1, 32, 16, 16), 2, 2),
    "bias_and_padding": (lambda: pair(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)),
                         (1, 4, 8, 8), 2, 2),
}


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_onnx_conv_count_drops_where_a_merge_is_legal_and_cheaper(case: str, tmp_path) -> None:
    build, shape, before, after = ONNX_CASES[case]
    model, x = build(), torch.randn(*shape)
    onnx_export(model, (x,), tmp_path / "orig.onnx")
    assert onnx_convs(tmp_path / "orig.onnx") == before
    low = lower_quiet(model, (x,))
    onnx_export(low, (x,), tmp_path / "low.onnx")
    assert onnx_convs(tmp_path / "low.onnx") == after
    sess = ort.InferenceSession(str(tmp_path / "low.onnx"), providers=["CPUExecutionProvider"])
    fresh = torch.randn(*shape)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: fresh.numpy()})
    with torch.no_grad():
        assert rel_err(torch.from_numpy(np.asarray(got)), model(fresh)) < 1e-5


# --------------------------------------------------------------------------- property


@st.composite
def conv_chains(draw, modes=("zeros",) * 5 + ("reflect", "circular")):
    dims = draw(st.integers(1, 3))
    n = draw(st.integers(2, 3))
    chans = [draw(st.sampled_from([1, 2, 4]))]
    layers: list[nn.Module] = []
    for _ in range(n):
        cin = chans[-1]
        groups = draw(st.sampled_from([g for g in (1, 2, 4) if cin % g == 0]))
        cout = groups * draw(st.integers(1, 2))
        k = draw(st.integers(1, 3 if dims < 3 else 2))
        dilation = draw(st.integers(1, 2))
        stride = draw(st.integers(1, 2))
        reach = dilation * (k - 1)
        padding = draw(st.sampled_from(
            [0, 1, reach, reach, max(0, reach - stride + 1)]))  # none, one, full, full - stride
        mode = draw(st.sampled_from(modes))
        bias = draw(st.sampled_from([True, False, False]))
        layers.append(make_conv(dims, cin, cout, k, stride, padding, dilation, groups, bias,
                                mode))
        if draw(st.integers(0, 3)) == 0:
            layers.append((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dims - 1](cout))
        chans.append(cout)
    side = draw(st.integers(6, 14 if dims < 3 else 8))
    merge = draw(st.sampled_from(["auto", "always"]))
    seed = draw(st.integers(0, 2**16))
    return dims, n, layers, chans[0], side, merge, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_chains())
def test_random_chains_are_merged_and_equal_or_refused_with_a_reason(chain) -> None:
    check_random_chain(chain, "symbolic_trace")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_chains(modes=("zeros",)))  # torch.export writes other modes as a separate pad
def test_random_chains_on_the_export_path(chain) -> None:
    check_random_chain(chain, "export")


def check_random_chain(chain, tracer: str) -> None:
    dims, n, layers, c0, side, merge, seed = chain
    torch.manual_seed(seed)
    model = randomise_bn(nn.Sequential(*layers).eval())
    x = torch.randn(1, c0, *([side] * dims))
    try:
        with torch.no_grad():
            y = model(x)
    except RuntimeError:  # the drawn chain does not fit the input (too small, reflect pad)
        event("chain does not fit its input")
        return
    if y.numel() == 0:
        event("chain does not fit its input")
        return
    try:
        low = lower_quiet(model, (x,), merge=merge, tracer=tracer)  # verifies against the chain
        verified = True
    except VerificationError:
        # fxlower's tolerance is relative to the output's own magnitude; a chain whose output
        # cancels (tiny output, O(1) intermediates) can exceed it with rounding alone. Then
        # the merge must still be exact in float64 (checked below) and within fp32 rounding
        # of the intermediates.
        low = lower_quiet(model, (x,), merge=merge, tracer=tracer, verify=False)
        verified = False
        event("fp32 error above fxlower's output-relative tolerance")
    rows = applied(low, PASS)
    refused = [s for s in skipped(low) if s.pass_name == PASS]
    merged_links = sum(int(r.detail.split()[1]) - 1 for r in rows)
    assert merged_links + len(refused) == n - 1  # every link merged or refused
    assert all(s.reason for s in refused)
    event(f"{merged_links} of {n - 1} links merged")
    for r in refused:
        event("refused: " + next((k for k in ("bias", "receptive field", "right border",
                                               "padding_mode", "would cost") if k in r.reason),
                                 r.reason))
    assert len(conv_layers(low)) == n - merged_links
    if merge == "auto":
        assert all(r.macs == 0 for r in rows)  # never more multiply-adds
    if rows:  # merged: equal to float64 rounding when composed and run in float64
        assert exact_in_float64(model, x, merge=merge, tracer=tracer) < 1e-11
    else:
        assert verified
    with torch.no_grad():
        err = float((low(x) - y).abs().max())
    assert err <= 1e-5 * largest_activation(model, x)


def largest_activation(model: nn.Module, x: torch.Tensor) -> float:
    """The largest magnitude among the input and every layer's output."""
    seen = [float(x.abs().max())]
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.append(float(o.abs().max())))
             for m in model.children()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return max(seen)
