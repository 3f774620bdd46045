"""slice_scatter_to_concat: data-dependent slice bounds are refused, and a property test of
slice and select writes over any bounds, steps, dims and dtypes. The forms on both capture
paths, dtypes and ONNX: tests/test_scatter_forms.py."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from helpers import skipped
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, SETTINGS
from strategies import draw_shape as _shape
from strategies import lower_and_compare as _lower_and_compare
from strategies import randn as _x
from strategies import source as _source

import fxlower

TRACERS = ["symbolic_trace", "export"]


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


# ---- property test ----------------------------------------------------------------------

class SliceWrite(nn.Module):
    def __init__(self, select: bool, dim: int, start: int | None, end: int | None, step: int) -> None:
        super().__init__()
        self.select, self.dim, self.start, self.end, self.step = select, dim, start, end, step

    def forward(self, x, src):
        if self.select:
            return torch.select_scatter(x, src, self.dim, self.start)
        return torch.slice_scatter(x, src, self.dim, self.start, self.end, self.step)


@SETTINGS
@given(data=st.data())
def test_slice_and_select_scatter_any_bounds(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 4), "rank")
    xs = _shape(data, rank)
    dim = data.draw(st.integers(-rank, rank - 1), "dim")
    n = xs[dim % rank]
    select = data.draw(st.booleans(), "select")
    if select:
        start, end, step = data.draw(st.integers(-n, n - 1), "index"), None, 1
        src_shape = xs[: dim % rank] + xs[dim % rank + 1:]
    else:
        start = data.draw(st.one_of(st.none(), st.integers(-n - 1, n)), "start")
        end = data.draw(st.one_of(st.none(), st.integers(-n - 1, n + 1)), "end")
        step = data.draw(st.integers(1, 3), "step")
        m = len(range(n)[slice(start, end, step)])
        if m == 0:  # an empty write is legal but leaves nothing to lower
            start, end = 0, None
            m = len(range(n)[slice(start, end, step)])
        src_shape = xs[: dim % rank] + (m,) + xs[dim % rank + 1:]
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    seed = data.draw(st.integers(0, 2**16), "seed")
    runs = [(_source(xs, dtype, seed + r), _source(src_shape, dtype, seed + 7 + r)) for r in range(2)]
    tracer = data.draw(st.sampled_from(TRACERS), "tracer")
    _lower_and_compare(SliceWrite(select, dim, start, end, step), runs, tracer,
                       "slice_scatter_to_concat")
