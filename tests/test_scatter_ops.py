"""fxlower.scatter_ops, the scatter family's shared layer: every spelling of a write has one
canonical record (on both capture paths), and the row kernels (assign, accumulate, the
exclusive prefix count) eagerly against torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import assert_same_outputs
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import DTYPES
from strategies import randn as _x
from strategies import source as _source

from fxlower.capture import capture
from fxlower.graph import EagerBuilder
from fxlower.kernels import scatter as scatter_ops

BOTH = ("symbolic_trace", "export")


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


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_rows_kernels_eagerly(data: st.DataObject) -> None:
    pre, n, post = (data.draw(st.integers(1, 6)) for _ in range(3))
    k = data.draw(st.integers(1, 12))
    batched = data.draw(st.booleans())
    dtype = data.draw(st.sampled_from(DTYPES))
    seed = data.draw(st.integers(0, 999))
    x, v = _source((pre, n, post), dtype, seed), _source((pre, k, post), dtype, seed + 1)
    idx = torch.randint(0, n, (pre, k) if batched else (k,))
    finite = not dtype.is_floating_point
    r = scatter_ops.Rows(pre, n, post, k, batched, dtype, finite, finite)
    full = idx.unsqueeze(-1).expand(pre, k, post) if batched else (
        idx.view(1, k, 1).expand(pre, k, post))
    got = scatter_ops.rows_assign(EagerBuilder(), x, v, idx, r, broadcast_value=False)
    assert_same_outputs(torch.scatter(x, 1, full, v), got)
    got = scatter_ops.rows_accumulate(EagerBuilder(), x, v, idx, r, name="scatter_add", rank=3,
                                      dim=1)
    assert_same_outputs(torch.scatter_add(x, 1, full, v), got)
    pos = scatter_ops.exclusive_prefix_count(EagerBuilder(), full.reshape(-1) > n // 2,
                                             full.numel())
    m = (full.reshape(-1) > n // 2).to(torch.float32)
    assert torch.equal(pos, torch.cumsum(m, 0) - m)
