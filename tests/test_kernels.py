"""fxlower.kernels eagerly (EagerBuilder), in every formulation, on many more cases than the
graph tests afford: take_rows, wrap_negative and gather_elements against torch."""

from __future__ import annotations

import torch
from helpers import assert_same_outputs, code_lookalikes
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import DTYPES
from strategies import source as _source

from fxlower.graph import EagerBuilder
from fxlower.kernels import gather as kernels

FORMULATIONS = [
    kernels.DEFAULT,
    kernels.Formulation(pack=False),
    kernels.Formulation(codes="classes"),
    kernels.Formulation(codes="classes", pack=False),
    kernels.Formulation(index_dtype=torch.int32),
    kernels.Formulation(mask="arith"),
    kernels.Formulation(mask="arith", index_dtype=torch.int32),
]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_take_rows_kernel_eagerly(data: st.DataObject) -> None:
    """The kernel itself, eagerly, in every formulation, on many more cases than the graph
    tests afford. The arithmetic mask has no comparisons, so it cannot carry NaN/inf/-0.0:
    it is drawn with finite sources only (a target without comparisons needs
    assume_finite=True for float sources)."""
    pre, n, post = (data.draw(st.integers(1, 9)) for _ in range(3))
    k = data.draw(st.integers(1, 9))
    batched = data.draw(st.booleans())
    dtype = data.draw(st.sampled_from(DTYPES))
    fm = data.draw(st.sampled_from(FORMULATIONS))
    seed = data.draw(st.integers(0, 999))
    x = code_lookalikes(_source((pre, n, post), dtype, seed), seed)
    known = data.draw(st.booleans()) and not dtype.is_floating_point
    if fm.mask == "arith" and dtype.is_floating_point:
        x = (torch.randn((pre, n, post), generator=torch.Generator().manual_seed(seed)) + 0.0).to(dtype)
        known = True
    idx = torch.randint(0, n, (pre, k) if batched else (k,))
    y = kernels.take_rows(EagerBuilder(), x, idx.clone(), pre=pre, n=n, post=post, k=k,
                          batched=batched, dtype=dtype, known_finite=known, fm=fm)
    ref = (torch.gather(x, 1, idx.unsqueeze(-1).expand(pre, k, post)) if batched
           else x[:, idx, :])
    assert_same_outputs(ref, y.reshape(pre, k, post))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_wrap_negative_and_gather_elements_in_every_formulation(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 9))
    fm = data.draw(st.sampled_from(FORMULATIONS))
    i = torch.arange(-n, n)
    got = kernels.wrap_negative(i, n, fm)
    assert torch.equal(got.to(torch.int64), torch.where(i < 0, i + n, i))
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    dim = data.draw(st.integers(0, len(shape) - 1))
    dtype = data.draw(st.sampled_from([torch.float32, torch.int64, torch.float16]))
    x = code_lookalikes(_source(shape, dtype, n), n)
    known = not dtype.is_floating_point
    if fm.mask == "arith" and dtype.is_floating_point:
        x, known = torch.randn(shape).to(dtype) + 0.0, True
    idx = torch.randint(0, shape[dim], shape)
    y = kernels.gather_elements(EagerBuilder(), x, dim, idx.clone(), x_shape=shape, dtype=dtype,
                                known_finite=known, fm=fm)
    assert_same_outputs(torch.gather(x, dim, idx), y)
