"""Every scatter-family form (scatter, scatter_add, index_put, index_add / copy / fill, mask
writes, masked_scatter, slice and select writes): lowered on both capture paths (export only
where symbolic tracing cannot capture the form) by whichever passes it needs, the op gone,
outputs bit-exact with non-finite values and duplicate indices; the duplicate guarantee
against PyTorch's CPU kernels; every dtype; constant indices; in-place writes that chain
several passes; the ONNX file free of Scatter*/Gather*/NonZero/CumSum/Range/OneHot and
bit-exact in onnxruntime. Each pass's own tests (and its refusals) are in tests/passes/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, lower_quiet, nonfinite, same
from strategies import randint as _i
from strategies import randn as _x
from strategies import scatter_left
from strategies import source as _source

import fxlower

FORBID = "Gather,GatherElements,GatherND,ScatterND,ScatterElements,Scatter,NonZero,CumSum,Range,OneHot"
BOTH = ("symbolic_trace", "export")
EXPORT = ("export",)


# ---- the forms ------------------------------------------------------------------------

class Scatter(nn.Module):
    def forward(self, x, i, s):
        return (torch.scatter(x, 1, i, s), x.scatter(0, i, s), x.scatter(-1, i, 2.5),
                torch.zeros_like(x).scatter_(1, i, 1.0), x.clone().scatter_(0, i, s))


class ScatterAdd(nn.Module):
    def forward(self, x, i, s):
        return (torch.scatter_add(x, 1, i, s), x.scatter_add(0, i, s),
                x.scatter_reduce(1, i, s, "sum"),
                x.scatter_reduce(0, i, s, "sum", include_self=False),
                x.scatter(1, i, s, reduce="add"), x.clone().scatter_add_(1, i, s))


class SegmentSum(nn.Module):
    """The GNN pattern: the index is broadcast along the feature dim."""

    def forward(self, x, ids, s):
        idx = ids.unsqueeze(-1).expand(-1, x.shape[1])
        return torch.zeros_like(x).scatter_add(0, idx, s), x.scatter(0, idx, s)


class IndexPutAssign(nn.Module):
    def forward(self, x, i, j, k, v):
        y = x.clone()
        y[i] = v  # negative indices wrap
        z = x.clone()
        z[:, j] = v.transpose(0, 1)[:4]
        a = x.clone()
        a[i, j] = v[0, 0]  # one row for every writer
        b = x.clone()
        b[i, :, k] = v[:, :, 0]  # non-adjacent index dims
        c = x.clone()
        c[i] = 0.0
        return y, z, a, b, c


class IndexPutAccumulate(nn.Module):
    def forward(self, x, i, j, k, v):
        return (x.index_put((i,), v, accumulate=True),
                torch.index_put(x, (i, j), v[0, 0], True),
                x.clone().index_put_((i,), v, accumulate=True), x.index_put((i,), v))


class MaskPut(nn.Module):
    def forward(self, x, m, val):
        y = x.clone()
        y[m] = 0.5
        z = x.clone()
        z[:, m[0]] = val  # a mask over the last dim
        return y, z, x.index_put((m,), val, accumulate=True), x.index_put((m[:, 0],), val)


class MaskPutMethods(nn.Module):
    def forward(self, x, m, val):
        return x.index_put((m,), val, accumulate=True), x.index_put((m[:, 0],), val)


class IndexAddCopyFill(nn.Module):
    def forward(self, x, i, j, k, v):
        i = i % 4  # index_add / index_copy do not wrap negative indices
        u = v.permute(2, 1, 0)[:4]
        return (torch.index_add(x, 0, i, v), x.index_add(1, j, v.transpose(0, 1)[:4]),
                x.clone().index_add_(2, k, u), torch.index_copy(x, 0, i, v),
                x.index_copy(2, k, u), x.index_fill(1, j, -0.0),
                torch.index_fill(x, 0, i, float("nan")), x.clone().index_fill_(2, k, 7.0))


class MaskedScatter(nn.Module):
    def forward(self, x, m, src):
        return (x.masked_scatter(m, src), x.masked_scatter(m[:1], src),
                x.clone().masked_scatter_(m, src))


class SliceScatter(nn.Module):
    def forward(self, x, s, r):
        rows = torch.cat([s, s, s], 1)[:2]
        return (torch.slice_scatter(x, s, 1, 1, 3), x.slice_scatter(s, dim=1, start=0, step=3),
                torch.slice_scatter(x, rows, 0, 1, None, 2), torch.select_scatter(x, r, 1, -1),
                torch.slice_scatter(x, s[:, :1], 1, -1), x.select_scatter(r, 1, 0))


class SliceAssign(nn.Module):
    def forward(self, x, s, r):
        a = x.clone()
        a[:, 1:3] = s
        b = x.clone()
        b[:, ::3] = s
        c = x.clone()
        c[:, 0] = 0.0
        d = x.clone()
        d[-1] = r
        e = x.clone()
        e[1:3, 0] = -0.0
        f = x.clone()
        f[::2] = r
        return a, b, c, d, e, f


def _put_inputs() -> tuple:
    x = nonfinite(_x(4, 5, 6))
    return (x, _i(4, 7, low=-4), _i(5, 7, seed=2), _i(6, 7, seed=3),
            nonfinite(_x(7, 5, 6, seed=4), 4))


CASES = {
    "scatter": (Scatter, lambda: (nonfinite(_x(4, 6)), _i(4, 3, 5), nonfinite(_x(3, 5, seed=2), 2)),
                BOTH, {"scatter_to_mask_matmul"}),
    "scatter_add": (ScatterAdd, lambda: (nonfinite(_x(4, 6)), _i(4, 3, 5),
                                         nonfinite(_x(3, 5, seed=2), 2)),
                    BOTH, {"scatter_to_mask_matmul"}),
    "segment_sum": (SegmentSum, lambda: (nonfinite(_x(5, 8)), _i(5, 7),
                                         nonfinite(_x(7, 8, seed=2), 2)),
                    BOTH, {"scatter_to_mask_matmul"}),
    "index_put_assign": (IndexPutAssign, _put_inputs, EXPORT, {"index_put_to_mask_matmul"}),
    "index_put_accumulate": (IndexPutAccumulate, _put_inputs, BOTH, {"index_put_to_mask_matmul"}),
    "mask_put": (MaskPut, lambda: (nonfinite(_x(4, 6)), _x(4, 6, seed=5) > 0, torch.tensor(-0.0)),
                 EXPORT, {"index_put_to_mask_matmul"}),
    "mask_put_methods": (MaskPutMethods, lambda: (nonfinite(_x(4, 6)), _x(4, 6, seed=5) > 0,
                                                  torch.tensor(1.5)),
                         BOTH, {"index_put_to_mask_matmul"}),
    "index_add_copy_fill": (IndexAddCopyFill, _put_inputs, BOTH, {"index_put_to_mask_matmul"}),
    "masked_scatter": (MaskedScatter, lambda: (nonfinite(_x(4, 6)), _x(4, 6, seed=5) > 0,
                                               nonfinite(_x(30, seed=6), 6)),
                       BOTH, {"masked_scatter_to_mask_matmul"}),
    "slice_scatter": (SliceScatter, lambda: (nonfinite(_x(4, 6)), nonfinite(_x(4, 2, seed=2), 2),
                                             nonfinite(_x(4, seed=3), 3)),
                      BOTH, {"slice_scatter_to_concat"}),
    "slice_assign": (SliceAssign, lambda: (nonfinite(_x(4, 6)), nonfinite(_x(4, 2, seed=2), 2),
                                           nonfinite(_x(6, seed=3), 3)),
                     EXPORT, {"slice_scatter_to_concat"}),
}


FORMS = [(c, t) for c in sorted(CASES) for t in CASES[c][2]]


def fresh(inputs: tuple, seed: int) -> tuple:
    """New float values (non-finite ones included); integer and bool inputs shuffled, so
    indices stay valid and duplicates stay duplicates."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in inputs:
        if t.is_floating_point():
            out.append(nonfinite(torch.randn(t.shape, generator=g), seed) if t.numel() > 1
                       else t.clone())
        else:
            out.append(t.reshape(-1)[torch.randperm(t.numel(), generator=g)].reshape(t.shape))
    return tuple(out)


@pytest.mark.parametrize(("case", "tracer"), FORMS)
def test_form_is_lowered_exactly(case: str, tracer: str) -> None:
    make_model, make_inputs, _, passes = CASES[case]
    model = make_model().eval()
    inputs = make_inputs()
    lowered = lower_quiet(model, inputs, tracer=tracer)
    report = fxlower.report_of(lowered)
    assert report.capture == ("torch.export" if tracer == "export" else "symbolic_trace")
    assert {a.pass_name for a in report.applied} >= passes
    assert scatter_left(lowered) == []
    assert report.verification["bit_exact"] is True
    for seed in range(3):
        args = fresh(inputs, seed)
        assert_same_outputs(model(*args), lowered(*args))


# ---- duplicates: the guarantee, against a reference and against PyTorch ---------------

def _last_writer_reference(x: torch.Tensor, rows: list[int], values: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    for k, n in enumerate(rows):  # index order: the last occurrence wins
        out[n] = values[k]
    return out


@pytest.mark.parametrize("tracer", BOTH)
def test_duplicates_last_writer_wins(tracer: str) -> None:
    class Assign(nn.Module):
        def forward(self, x, i, v):
            return x.index_put((i,), v), torch.index_copy(x, 0, i, v), torch.scatter(
                x, 0, i.unsqueeze(1).expand(-1, x.shape[1]), v)

    x = nonfinite(_x(5, 3))
    i = torch.tensor([2, 0, 2, 2, 4, 0, 2])  # 2 written four times, 0 twice, 1 and 3 never
    v = nonfinite(_x(7, 3, seed=1), 1)
    v[3] = torch.tensor([float("nan"), -0.0, float("-inf")])  # the last writer of row 2 is k=6
    v[6] = torch.tensor([-0.0, float("inf"), 1.0])
    lowered = lower_quiet(Assign(), (x, i, v), tracer=tracer)
    ref = _last_writer_reference(x, i.tolist(), v)
    for out, torch_out in zip(lowered(x, i, v), Assign()(x, i, v), strict=True):
        assert same(out, ref)
        assert same(out, torch_out)  # PyTorch's CPU kernels, serial at this size


def test_duplicates_are_summed_in_index_order_bit_exactly() -> None:
    """1e8 + 1 - 1e8 in float32: the order of the additions is visible in the result."""

    class Add(nn.Module):
        def forward(self, x, i, v):
            return torch.index_add(x, 0, i, v), x.index_put((i,), v, accumulate=True), \
                torch.scatter_add(x, 0, i, v)

    x = torch.tensor([0.0, 1.0, -0.0])
    i = torch.tensor([0, 0, 0, 2, 2, 1])
    v = torch.tensor([1e8, 1.0, -1e8, -0.0, -0.0, float("inf")])
    lowered = lower_quiet(Add(), (x, i, v), tracer="export")
    for out in lowered(x, i, v):
        assert same(out, torch.tensor([0.0, float("inf"), -0.0]))  # sequential: (1e8+1)-1e8 = 0
    assert_same_outputs(Add()(x, i, v), lowered(x, i, v))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sums_round_as_pytorch_does(dtype: torch.dtype) -> None:
    """scatter_add, and index_add along the first or last dim, sum in float32 and round
    once; index_add along a middle dim and index_put accumulate round after every addition
    (PyTorch 2.13's CPU kernels)."""

    class Half(nn.Module):
        def forward(self, x, i, v, v0, v2):
            return (torch.scatter_add(x, 1, i.view(1, 5, 1).expand(3, 5, 4), v),
                    torch.index_add(x, 0, i, v0), torch.index_add(x, 1, i, v),
                    torch.index_add(x, 2, i, v2), x.index_put((i,), v0, accumulate=True))

    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 300).to(dtype)

    x, v, v0, v2 = r(3, 5, 4), r(3, 5, 4), r(5, 5, 4), r(3, 5, 5)
    i = torch.tensor([2, 0, 2, 2, 1])
    lowered = lower_quiet(Half(), (x, i, v, v0, v2), tracer="export")
    assert scatter_left(lowered) == []
    assert_same_outputs(Half()(x, i, v, v0, v2), lowered(x, i, v, v0, v2))
    # the two roundings differ on these values: the test tells them apart
    once = torch.index_add(x.float(), 1, i, v.float()).to(dtype)
    assert not torch.equal(once, torch.index_add(x, 1, i, v))


# ---- dtypes -----------------------------------------------------------------------------

class AllForms(nn.Module):
    def forward(self, x, i, m, src):
        ii = i.unsqueeze(1).expand(-1, x.shape[1])
        return (torch.scatter(x, 0, ii, src[: i.shape[0]]), torch.scatter_add(x, 0, ii, src[: i.shape[0]]),
                x.index_put((i,), src[: i.shape[0]]), x.index_put((i,), src[: i.shape[0]], accumulate=True),
                torch.index_add(x, 1, i[:3], src[:4, :3]), torch.index_copy(x, 0, i, src[: i.shape[0]]),
                x.masked_scatter(m, src), torch.slice_scatter(x, src[:4, :2], 1, 1, 5, 2),
                x.index_fill(1, i[:2], 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                   torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool])
@pytest.mark.parametrize("tracer", BOTH)
def test_dtypes_are_exact(dtype: torch.dtype, tracer: str) -> None:
    x, src = _source((4, 5), dtype, 0), _source((6, 5), dtype, 1)
    i, m = torch.tensor([3, 0, 3, 1, 3, 0]), _x(4, 5, seed=2) > 0
    lowered = lower_quiet(AllForms(), (x, i, m, src), tracer=tracer)
    assert scatter_left(lowered) == []
    assert_same_outputs(AllForms()(x, i, m, src), lowered(x, i, m, src))


# ---- constant indices: nothing index-dependent at run time -------------------------------

def test_constant_index_precomputes_the_masks() -> None:
    class Const(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("rows", torch.tensor([4, 0, 4, 2]))
            self.register_buffer("mask", torch.tensor([[True, False, True], [False, False, True]]))

        def forward(self, x, v):
            return (x.index_put((self.rows,), v), torch.index_add(x, 0, self.rows, v),
                    torch.scatter(x, 0, self.rows.unsqueeze(1).expand(-1, 3), v),
                    x[:2].masked_scatter(self.mask, v))

    x, v = nonfinite(_x(5, 3)), nonfinite(_x(4, 3, seed=1), 1)
    for tracer in BOTH:
        lowered = lower_quiet(Const(), (x, v), tracer=tracer)
        consts = [str(n.target) for n in lowered.graph.nodes if n.op == "get_attr"]
        assert not any("arange" in c or "kpos" in c or "strict_upper" in c for c in consts), consts
        assert scatter_left(lowered) == []
        assert_same_outputs(Const()(x, v), lowered(x, v))


# ---- in-place writes that chain several passes (symbolically traced graphs) ---------------

def test_inplace_chain_across_passes() -> None:
    """scatter_ (an earlier pass) writes into the result of index_add_ (a later pass): both
    write into one fresh tensor, whose later readers see both writes."""

    class Chain(nn.Module):
        def forward(self, x, i, j, v):
            y = torch.zeros_like(x)
            out = y.index_add_(0, i, v).scatter_(1, j, 1.0)
            return out, y * 2

    x, i, v = nonfinite(_x(4, 3)), torch.tensor([1, 1, 3]), nonfinite(_x(3, 3, seed=1), 1)
    j = torch.tensor([[2], [0], [2], [1]])
    lowered = lower_quiet(Chain(), (x, i, j, v), tracer="symbolic_trace")
    assert {a.pass_name for a in applied(lowered)} == {"scatter_to_mask_matmul",
                                                        "index_put_to_mask_matmul"}
    assert scatter_left(lowered) == []
    assert_same_outputs(Chain()(x, i, j, v), lowered(x, i, j, v))


def test_inplace_statement_after_a_gather() -> None:
    class Statement(nn.Module):
        def forward(self, x, i, v):
            y = x.clone()
            y.index_add_(0, i, v)  # result unused: only y carries the write
            y.masked_scatter_(y > 0, v)  # a second statement on the same tensor
            return y, x[:, 0]  # select_to_slice changes the graph first (erase_dead runs)

    x, i, v = nonfinite(_x(4, 3)), torch.tensor([1, 1, 3]), nonfinite(_x(3, 3, seed=1), 1)
    lowered = lower_quiet(Statement(), (x, i, v), tracer="symbolic_trace")
    assert len(applied(lowered)) == 3
    assert scatter_left(lowered) == []
    assert_same_outputs(Statement()(x, i, v), lowered(x, i, v))


# ---- ONNX round trip: no forbidden op, bit-exact in onnxruntime -------------------------

def _ort(path: Path, inputs: tuple) -> list[torch.Tensor]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {s.name: t.numpy() for s, t in zip(sess.get_inputs(), inputs, strict=True)}
    return [torch.from_numpy(np.asarray(o)) for o in sess.run(None, feed)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_round_trip_is_clean_and_bit_exact(case: str, tmp_path: Path) -> None:
    make_model, make_inputs, tracers, _ = CASES[case]
    model, inputs = make_model().eval(), make_inputs()
    path = tmp_path / "m.onnx"
    report = fxlower.export(model, inputs, path, forbid=FORBID, tracer=tracers[-1])
    assert report.onnx["forbidden"] == 0
    for seed in range(2):
        args = fresh(inputs, seed)
        assert_same_outputs(tuple(model(*args)), tuple(_ort(path, args)))
