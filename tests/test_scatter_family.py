"""Every scatter-family form: lowered on both capture paths (export only where symbolic
tracing cannot capture the form), the op gone, outputs bit-exact with non-finite values and
duplicate indices, the duplicate guarantee against PyTorch's CPU kernels, the ONNX file free
of Scatter*/Gather*/NonZero/CumSum/Range/OneHot and bit-exact in onnxruntime, and every
refusal with its reason."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, lower_quiet, nonfinite, same, skipped

import fxlower
from fxlower import scatter_ops
from fxlower.capture import capture
from fxlower.census import census

SCATTER_GATHER = frozenset({"ScatterND", "ScatterElements", "Scatter", "Gather",
                            "GatherElements", "GatherND"})
FORBID = "Gather,GatherElements,GatherND,ScatterND,ScatterElements,Scatter,NonZero,CumSum,Range,OneHot"
BOTH = ("symbolic_trace", "export")
EXPORT = ("export",)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _i(high: int, *shape: int, seed: int = 1, low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed))


def scatter_left(lowered: torch.fx.GraphModule) -> list[str]:
    """Scatter/gather-family nodes left: the census's view and the scatter view."""
    return [*census(lowered, SCATTER_GATHER), *scatter_ops.remaining(lowered)]


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


class Spellings(nn.Module):
    def forward(self, x, i, s, m):
        y = x.clone()
        return (torch.scatter(x, 0, i, s), x.scatter_add(0, i, s),
                y.scatter_(0, i, 1.0), x.scatter(0, i, s, reduce="multiply"),
                x.scatter_reduce(0, i, s, "amax", include_self=False),
                torch.index_put(x, (i[0],), s[0, 0], True), x.index_add(1, i[0], s, alpha=2),
                torch.index_copy(x, 1, i[0], s), x.index_fill(1, i[0], 3.0),
                x.masked_scatter(m, s), torch.slice_scatter(x, s[:, :1], 1, 2, 3),
                torch.select_scatter(x, s[:, 0], 1, 0))


@pytest.mark.parametrize("tracer", BOTH)
def test_every_spelling_has_one_canonical_record(tracer: str) -> None:
    x, i, s, m = _x(2, 3), torch.tensor([[1, 0, 1], [0, 0, 1]]), _x(2, 3, seed=1), _x(2, 3) > 0
    gm = capture(Spellings(), (x, i, s, m), tracer).gm
    ops = [op for n in gm.graph.nodes if (op := scatter_ops.scatter_op(n)) is not None]
    got = [(op.kind, op.name, op.accumulate, op.reduce, op.include_self) for op in ops]
    assert got == [
        ("scatter", "scatter", False, None, True), ("scatter", "scatter_add", True, None, True),
        ("scatter", "scatter", False, None, True), ("scatter", "scatter", False, "multiply", True),
        ("scatter", "scatter_reduce", False, "amax", False),
        ("index_put", "index_put", True, None, True), ("index_put", "index_add", True, None, True),
        ("index_put", "index_copy", False, None, True),
        ("index_put", "index_fill", False, None, True),
        ("masked_scatter", "masked_scatter", False, None, True),
        ("slice_scatter", "slice_scatter", False, None, True),
        ("select_scatter", "select_scatter", False, None, True),
    ]
    inplace = [op.spelling for op in ops if op.inplace]
    assert inplace == (["Tensor.scatter_"] if tracer == "symbolic_trace" else [])
    alpha = [op.alpha for op in ops if op.name == "index_add"]
    assert alpha == [2]
    assert [op.src for op in ops if op.name == "index_fill"] == [3.0]


def test_broadcast_index_uses_k_by_n_mask_not_k_by_n_by_d() -> None:
    x, ids, s = nonfinite(_x(5, 8)), _i(5, 7), nonfinite(_x(7, 8, seed=2), 2)
    lowered = lower_quiet(SegmentSum(), (x, ids, s))
    rows = applied(lowered, "scatter_to_mask_matmul")
    assert len(rows) == 2
    for r in rows:
        assert "1 x [7 writers -> 5] x 8" in r.detail
        assert r.mask_elems == 7 * 5
    assert rows[0].detail.startswith("sum in index order, unrolled over 7 writers (bit-exact)")
    assert rows[1].detail.startswith("last writer wins: ReduceMax + one-hot matmul")


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


def test_many_writers_sum_in_matmul_order_within_rounding() -> None:
    """More than MAX_UNROLL writers: floats are summed by a matmul (not bit-exact, and the
    report says so); integers stay exact."""

    class Many(nn.Module):
        def forward(self, x, i, v, xi, vi):
            return torch.index_add(x, 0, i, v), torch.index_add(xi, 0, i, vi)

    k = scatter_ops.MAX_UNROLL + 36
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(6, 3, generator=g), torch.randn(k, 3, generator=g) * 1000
    v[5, 0], v[9, 1], v[11, 1] = float("nan"), float("inf"), float("-inf")
    xi = torch.randint(-(2**62), 2**62, (6, 3), generator=g)
    vi = torch.randint(-(2**62), 2**62, (k, 3), generator=g)
    i = torch.randint(0, 6, (k,), generator=g)
    lowered = lower_quiet(Many(), (x, i, v, xi, vi), tracer="export")
    details = [r.detail for r in applied(lowered, "index_put_to_mask_matmul")]
    assert "not bit-exact" in details[0] and "one-hot matmul" in details[0]
    assert "integer dtype (exact)" in details[1]
    assert fxlower.report_of(lowered).verification["bit_exact"] is False  # said, not hidden
    got, got_i = lowered(x, i, v, xi, vi)
    want, want_i = Many()(x, i, v, xi, vi)
    assert torch.equal(got_i, want_i)  # int64 beyond 2**24, wrap-around included
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    fin = torch.isfinite(want)
    assert torch.equal(got[~fin & ~torch.isnan(want)], want[~fin & ~torch.isnan(want)])
    ref64 = torch.index_add(x.double(), 0, i, v.double())
    err, own = (got - ref64)[fin].abs().max(), (want - ref64)[fin].abs().max()
    assert err <= max(4 * own, 8 * torch.finfo(torch.float32).eps * ref64[fin].abs().max())


# ---- dtypes -----------------------------------------------------------------------------

class AllForms(nn.Module):
    def forward(self, x, i, m, src):
        ii = i.unsqueeze(1).expand(-1, x.shape[1])
        return (torch.scatter(x, 0, ii, src[: i.shape[0]]), torch.scatter_add(x, 0, ii, src[: i.shape[0]]),
                x.index_put((i,), src[: i.shape[0]]), x.index_put((i,), src[: i.shape[0]], accumulate=True),
                torch.index_add(x, 1, i[:3], src[:4, :3]), torch.index_copy(x, 0, i, src[: i.shape[0]]),
                x.masked_scatter(m, src), torch.slice_scatter(x, src[:4, :2], 1, 1, 5, 2),
                x.index_fill(1, i[:2], 3))


def _source(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype == torch.int64:
        return torch.randint(-(2**62), 2**62, shape, generator=g)
    if not dtype.is_floating_point:
        return torch.randint(0, 120, shape, generator=g).to(dtype)
    return nonfinite(torch.randn(shape, generator=g) * 100, seed).to(dtype)


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


# ---- in-place writes in symbolically traced graphs ----------------------------------------

def test_inplace_write_redirects_later_readers() -> None:
    class Later(nn.Module):
        def forward(self, x, i, v):
            y = x * 1.0
            y2 = y.index_add_(0, i, v)  # later readers of y must see the write
            z = y + 1
            y.index_fill_(1, i[:1], 0.0)  # a chain of in-place writes
            return y2 * 2, z, y

    x, i, v = nonfinite(_x(4, 3)), torch.tensor([1, 1, 3]), nonfinite(_x(3, 3, seed=1), 1)
    lowered = lower_quiet(Later(), (x, i, v), tracer="symbolic_trace")
    assert len(applied(lowered)) == 2
    assert scatter_left(lowered) == []
    assert_same_outputs(Later()(x, i, v), lowered(x, i, v))


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


# ---- refusals -----------------------------------------------------------------------------

def _reasons(model: nn.Module, inputs: tuple, tracer: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(model, inputs, tracer=tracer, on_forbidden="warn", verify=False)
    return [s.reason for s in skipped(lowered)]


@pytest.mark.parametrize("tracer", BOTH)
@pytest.mark.parametrize("reduce", ["prod", "mean", "amax", "amin"])
def test_scatter_reduce_other_than_sum_is_refused(reduce: str, tracer: str) -> None:
    class Reduce(nn.Module):
        def forward(self, x, i, s):
            return x.scatter_reduce(1, i, s, reduce)

    reasons = _reasons(Reduce(), (_x(4, 6), _i(4, 3, 5), _x(3, 5)), tracer)
    assert reasons == [f"reduce='{reduce}' is not lowered: only assignment and sums "
                       "(scatter_add, reduce='sum' or 'add') are"]


def test_scatter_multiply_is_refused() -> None:
    class Mul(nn.Module):
        def forward(self, x, i, s):
            return x.scatter(1, i, s, reduce="multiply")

    for tracer in BOTH:
        reasons = _reasons(Mul(), (_x(4, 6), _i(4, 3, 5), _x(3, 5)), tracer)
        assert any(r.startswith("reduce='multiply' is not lowered") for r in reasons)


def test_float_alpha_is_refused_integer_alpha_is_exact() -> None:
    class Alpha(nn.Module):
        def forward(self, x, i, v, xi, vi):
            return torch.index_add(x, 0, i, v, alpha=0.5), torch.index_add(xi, 0, i, vi, alpha=3)

    x, v = _x(4, 3), _x(3, 3, seed=1)
    xi, vi = torch.randint(-100, 100, (4, 3), dtype=torch.int8), torch.randint(-100, 100, (3, 3), dtype=torch.int8)
    i = torch.tensor([1, 1, 2])
    for tracer in BOTH:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lowered = fxlower.lower(Alpha(), (x, i, v, xi, vi), tracer=tracer,
                                    on_forbidden="warn")
        assert [s.reason for s in skipped(lowered)] == [
            "alpha=0.5: PyTorch fuses the multiply into the addition (one rounding), which "
            "separate ops do not reproduce bit-exactly"]
        assert len(applied(lowered, "index_put_to_mask_matmul")) == 1
        assert_same_outputs(Alpha()(x, i, v, xi, vi), lowered(x, i, v, xi, vi))


def test_inplace_into_input_or_view_is_refused() -> None:
    class IntoInput(nn.Module):
        def forward(self, x, i, v):
            return x.index_add_(0, i, v) * 1.0

    class IntoView(nn.Module):
        def forward(self, x, i, v):
            y = x.clone()
            w = y[:, :2]
            out = y.index_add_(0, i, v)
            return out, w

    class IntoTraceConstant(nn.Module):
        def forward(self, x, i, v):
            return torch.zeros(4, 3).index_add_(0, i, v) + x

    class ThroughAnotherInplace(nn.Module):
        def forward(self, x, i, v):
            return x.mul_(2).index_add_(0, i, v) * 1.0  # mul_ returns x itself

    x, i, v = _x(4, 3), torch.tensor([1, 1, 2]), _x(3, 3, seed=1)
    r = _reasons(ThroughAnotherInplace(), (x.clone(), i, v), "symbolic_trace")
    assert r == ["Tensor.index_add_ writes into 'x' in place, which is an input: the write "
                 "would be visible outside forward"]
    r = _reasons(IntoInput(), (x.clone(), i, v), "symbolic_trace")
    assert r == ["Tensor.index_add_ writes into 'x' in place, which is an input: the write "
                 "would be visible outside forward"]
    r = _reasons(IntoView(), (x, i, v), "symbolic_trace")
    assert r == ["Tensor.index_add_ writes into 'clone' in place, and 'getitem' takes a view "
                 "of it first, which would see the write"]
    r = _reasons(IntoTraceConstant(), (x, i, v), "symbolic_trace")
    assert len(r) == 1 and "computed once at trace time" in r[0] and "tracer='export'" in r[0]
    # torch.export functionalises all three: they lower there
    for model in (IntoView(), IntoTraceConstant()):
        lowered = lower_quiet(model, (x, i, v), tracer="export")
        assert scatter_left(lowered) == []


def test_mask_index_with_many_values_is_refused() -> None:
    class ManyValues(nn.Module):
        def forward(self, x, m, v):
            return x.index_put((m,), v)

    x, m = _x(2, 3), torch.tensor([[True, False, True], [False, True, False]])
    for tracer in BOTH:
        assert _reasons(ManyValues(), (x, m, _x(3, seed=1)), tracer) == [
            "a boolean mask index with a value of 3 elements: where each element lands "
            "depends on the number of True entries"]


def test_masked_scatter_that_broadcasts_x_is_refused() -> None:
    class Grow(nn.Module):
        def forward(self, x, m, s):
            return x.masked_scatter(m, s)

    reasons = _reasons(Grow(), (_x(1, 3), _x(2, 3) > 0, _x(6, seed=1)), "symbolic_trace")
    assert reasons == ["the mask broadcasts the tensor written into to a larger shape (2, 3)"]


def test_dynamic_slice_bounds_are_refused() -> None:
    class Dyn(nn.Module):
        def forward(self, x, s, n):
            return torch.slice_scatter(x, s, 1, n.item(), n.item() + 2)

    x, s, n = _x(3, 6), _x(3, 2, seed=1), torch.tensor(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(Dyn(), (x, s, n), tracer="symbolic_trace", verify=False,
                                on_forbidden="warn")
    assert [r.reason for r in skipped(lowered)] == [
        "the written slice's bounds are not known when lowering (data-dependent)"]


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
