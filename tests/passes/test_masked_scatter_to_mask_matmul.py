"""masked_scatter_to_mask_matmul: a mask that broadcasts the tensor written into is refused, and
a property test over random shapes, broadcast masks and spare source elements. The forms on
both capture paths, dtypes, constant masks and ONNX: tests/test_scatter_forms.py."""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, SETTINGS
from strategies import draw_shape as _shape
from strategies import lower_and_compare as _lower_and_compare
from strategies import randn as _x
from strategies import skip_reasons as _reasons
from strategies import source as _source

TRACERS = ["symbolic_trace", "export"]


def test_masked_scatter_that_broadcasts_x_is_refused() -> None:
    class Grow(nn.Module):
        def forward(self, x, m, s):
            return x.masked_scatter(m, s)

    reasons = _reasons(Grow(), (_x(1, 3), _x(2, 3) > 0, _x(6, seed=1)), "symbolic_trace")
    assert reasons == ["the mask broadcasts the tensor written into to a larger shape (2, 3)"]


# ---- property test ----------------------------------------------------------------------

class MaskedScatterModel(nn.Module):
    def forward(self, x, m, src):
        return x.masked_scatter(m, src)


@SETTINGS
@given(data=st.data())
def test_masked_scatter_any_shape_broadcast_mask(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 4), "rank")
    xs = _shape(data, rank)
    ms = tuple(1 if data.draw(st.booleans()) else s for s in xs)
    ms = ms[data.draw(st.integers(0, rank)):]  # the mask may have fewer dims
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    seed = data.draw(st.integers(0, 2**16), "seed")
    g = torch.Generator().manual_seed(seed)
    numel = 1
    for s in xs:
        numel *= s
    ns = numel + data.draw(st.integers(0, 3), "spare source")
    runs = [(_source(xs, dtype, seed + r), torch.rand(ms, generator=g) > 0.5,
             _source((ns,), dtype, seed + 7 + r)) for r in range(2)]
    tracer = data.draw(st.sampled_from(TRACERS), "tracer")
    _lower_and_compare(MaskedScatterModel(), runs, tracer, "masked_scatter_to_mask_matmul")
