"""scatter_to_mask_matmul: the broadcast index's K x N mask, the refused reductions, and a
property test over random shapes, dims, dtypes, broadcast structure, duplicates and modes.
The forms on both capture paths, duplicates, dtypes and ONNX: tests/test_scatter_forms.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import applied, lower_quiet, nonfinite
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, SETTINGS
from strategies import draw_shape as _shape
from strategies import lower_and_compare as _lower_and_compare
from strategies import randint as _i
from strategies import randn as _x
from strategies import skip_reasons as _reasons
from strategies import source as _source
from test_scatter_forms import SegmentSum

BOTH = ("symbolic_trace", "export")
TRACERS = ["symbolic_trace", "export"]


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


# ---- refusals -----------------------------------------------------------------------------

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


# ---- property test ----------------------------------------------------------------------

class ScatterModel(nn.Module):
    def __init__(self, mode: str, dim: int, ishape: tuple[int, ...]) -> None:
        super().__init__()
        self.mode, self.dim, self.ishape = mode, dim, ishape

    def forward(self, x, core, src):
        idx = core.expand(self.ishape)
        if self.mode == "assign":
            return torch.scatter(x, self.dim, idx, src)
        if self.mode == "value":
            return x.scatter(self.dim, idx, 3)
        if self.mode == "value_add":
            return x.scatter(self.dim, idx, 3, reduce="add")
        if self.mode == "add":
            return x.scatter_add(self.dim, idx, src)
        if self.mode == "reduce_add":
            return x.scatter(self.dim, idx, src, reduce="add")
        return x.scatter_reduce(self.dim, idx, src, "sum", include_self=self.mode == "sum_self")


@SETTINGS
@given(data=st.data())
def test_scatter_any_shape_dim_dtype_broadcast_duplicates(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 4), "rank")
    xs = _shape(data, rank)
    dim = data.draw(st.integers(-rank, rank - 1), "dim")
    d = dim % rank
    ishape = tuple(data.draw(st.integers(1, 6)) if i == d else data.draw(st.integers(1, xs[i]))
                   for i in range(rank))
    src_shape = tuple(s + data.draw(st.integers(0, 1)) for s in ishape)  # src may be larger
    # broadcast dims: the index is constant along them (expanded from size 1)
    core_shape = tuple(1 if i != d and data.draw(st.booleans(), f"broadcast {i}") else ishape[i]
                       for i in range(rank))
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    mode = data.draw(st.sampled_from(["assign", "value", "value_add", "add", "reduce_add",
                                      "sum_self", "sum_noself"]), "mode")
    if mode in ("value_add", "reduce_add", "sum_noself") and dtype == torch.bool:
        mode = "add"  # PyTorch has no bool scatter_reduce
    seed = data.draw(st.integers(0, 2**16), "seed")
    g = torch.Generator().manual_seed(seed)
    runs = [(_source(xs, dtype, seed + r), torch.randint(0, xs[d], core_shape, generator=g),
             _source(src_shape, dtype, seed + 7 + r)) for r in range(2)]
    tracer = data.draw(st.sampled_from(TRACERS), "tracer")
    _lower_and_compare(ScatterModel(mode, dim, ishape), runs, tracer, "scatter_to_mask_matmul")
