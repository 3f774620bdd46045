"""select_to_slice: an unbind used as a whole is refused on the symbolic_trace path (torch.export
splits it into items), and a property test of integer selects at any position. The forms on
both capture paths and every dtype: tests/test_gather_forms.py; without example inputs:
tests/test_api_promises.py."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from helpers import assert_same_outputs, gather_ops_left, lower_quiet, skipped
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, SETTINGS
from strategies import lower_unverified as _lower
from strategies import randn as _x
from strategies import source as _source

import fxlower


def test_unbind_used_whole_is_refused() -> None:
    class Whole(nn.Module):
        def forward(self, x):
            return torch.unbind(x, 1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(Whole(), (_x(2, 3),), on_forbidden="warn",
                                tracer="symbolic_trace")
    assert any("used as a whole" in s.reason for s in skipped(lowered))
    # torch.export splits the tuple into items, so the same model lowers on that path
    lowered = lower_quiet(Whole(), (_x(2, 3),), tracer="export")
    assert gather_ops_left(lowered) == {}


# ---- property test ----------------------------------------------------------------------

class IntKey(nn.Module):
    def __init__(self, key: tuple) -> None:
        super().__init__()
        self.key = key

    def forward(self, x):
        return x[self.key]


@SETTINGS
@given(data=st.data())
def test_integer_select_any_position(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 4), "rank")
    xs = tuple(data.draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank), "x shape"))
    key = tuple(
        data.draw(st.one_of(st.just(slice(None)), st.integers(-s, s - 1))) for s in xs
    )
    if data.draw(st.booleans(), "ellipsis") and rank > 1:
        key = (Ellipsis,) + key[1:]
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    x = _source(xs, dtype, data.draw(st.integers(0, 999)))
    tracer = data.draw(st.sampled_from(["symbolic_trace", "export"]), "tracer")
    model = IntKey(key)
    lowered = _lower(model, (x,), tracer)
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(model(x), lowered(x))
