"""index_put_to_mask_matmul: more writers than MAX_UNROLL summed by a matmul (said, not
hidden), in-place writes in symbolically traced graphs, the refusals (float alpha, writes
into an input or a viewed tensor, a mask index with many values), and a property test over
random index positions, broadcast values, duplicates, accumulate or assign, and index_add /
copy / fill along any dim. The forms on both capture paths, duplicates, dtypes and ONNX:
tests/test_scatter_forms.py."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, lower_quiet, nonfinite, skipped
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, SETTINGS, scatter_left
from strategies import draw_shape as _shape
from strategies import lower_and_compare as _lower_and_compare
from strategies import randn as _x
from strategies import skip_reasons as _reasons
from strategies import source as _source

import fxlower
from fxlower.kernels import scatter as scatter_ops

BOTH = ("symbolic_trace", "export")
TRACERS = ["symbolic_trace", "export"]


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


# ---- refusals -----------------------------------------------------------------------------

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


# ---- property test ----------------------------------------------------------------------

class IndexPutModel(nn.Module):
    """aten.index_put with None for the dims not indexed (`x[:, i, :, j] = v`): the one
    spelling both tracers take for any index positions."""

    def __init__(self, positions: list[int], accumulate: bool) -> None:
        super().__init__()
        self.positions, self.accumulate = positions, accumulate

    def forward(self, x, v, i0, i1, i2):
        key: list = [None] * (self.positions[-1] + 1)
        for p, t in zip(self.positions, (i0, i1, i2), strict=False):
            key[p] = t
        return torch.ops.aten.index_put.default(x, key, v, self.accumulate)


class IndexAlongDim(nn.Module):
    def __init__(self, op: str, dim: int, fill: float) -> None:
        super().__init__()
        self.op, self.dim, self.fill = op, dim, fill

    def forward(self, x, v, i0, i1, i2):
        if self.op == "index_add":
            return torch.index_add(x, self.dim, i0, v)
        if self.op == "index_copy":
            return x.index_copy(self.dim, i0, v)
        return x.index_fill(self.dim, i0, self.fill)


@SETTINGS
@given(data=st.data())
def test_index_put_add_copy_fill_any_positions_broadcast_duplicates(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 4), "rank")
    xs = _shape(data, rank)
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    seed = data.draw(st.integers(0, 2**16), "seed")
    g = torch.Generator().manual_seed(seed)
    form = data.draw(st.sampled_from(["index_put", "index_add", "index_copy", "index_fill"]))
    unused = torch.zeros((), dtype=torch.int64)
    if form == "index_put":
        positions = sorted(data.draw(st.sets(st.integers(0, rank - 1), min_size=1,
                                             max_size=min(3, rank)), "positions"))
        sshape = _shape(data, data.draw(st.integers(0, 2), "index rank"), 1, 4)
        accumulate = data.draw(st.booleans(), "accumulate")
        idx = []
        for p in positions:  # each index broadcastable to sshape, negatives wrap
            shp = tuple(1 if torch.rand((), generator=g) < 0.3 else s for s in sshape)
            idx.append(torch.randint(-xs[p], xs[p], shp, generator=g))
        key = [slice(None)] * rank
        for p, t in zip(positions, idx, strict=True):
            key[p] = t
        result = tuple(torch.empty(xs)[tuple(key)].shape)
        # the values: the full result shape, or broadcast along some of its dims
        vshape = tuple(1 if data.draw(st.booleans()) else s for s in result)
        vshape = vshape[data.draw(st.integers(0, len(vshape))):]
        model: nn.Module = IndexPutModel(positions, accumulate)
        idx += [unused] * (3 - len(idx))
    else:
        dim = data.draw(st.integers(-rank, rank - 1), "dim")
        k = data.draw(st.integers(1, 8), "k")
        i0 = torch.randint(0, xs[dim], (k,), generator=g)
        idx = [i0, unused, unused]
        vshape = tuple(k if j == dim % rank else s for j, s in enumerate(xs))
        model = IndexAlongDim(form, dim, -0.0 if dtype.is_floating_point else 5)
    runs = []
    for r in range(2):
        shuffled = [t.reshape(-1)[torch.randperm(t.numel(), generator=g)].reshape(t.shape)
                    for t in idx]
        runs.append((_source(xs, dtype, seed + r), _source(vshape, dtype, seed + 7 + r),
                     *shuffled))
    tracer = data.draw(st.sampled_from(TRACERS), "tracer")
    _lower_and_compare(model, runs, tracer, "index_put_to_mask_matmul")
