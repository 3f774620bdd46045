"""Property-based tests: random shapes, dims, dtypes and index values (duplicated, negative,
boundary), random broadcast structure; the lowered graph against the original op, bit-exact.
Every example ends as "rewritten and equal"; a refusal here would be a failure, because
every drawn case is legal."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from helpers import assert_same_outputs, gather_ops_left, nonfinite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower
from fxlower import kernels
from fxlower.graph import EagerBuilder

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.uint8, torch.bool]
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _source(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype == torch.int64:
        return torch.randint(-(2**62), 2**62, shape, generator=g)
    if not dtype.is_floating_point:
        return torch.randint(0, 120, shape, generator=g).to(dtype)
    return nonfinite(torch.randn(shape, generator=g) * 100, seed).to(dtype)


def _lower(model: nn.Module, inputs: tuple, tracer: str) -> torch.fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxlower.lower(model, inputs, verify=False, tracer=tracer)


class GatherExpand(nn.Module):
    def __init__(self, dim: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.dim, self.shape = dim, shape

    def forward(self, x, core):
        return torch.gather(x, self.dim, core.expand(self.shape))


@SETTINGS
@given(data=st.data())
def test_gather_any_shape_dim_dtype_broadcast(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 4), "rank")
    xs = tuple(data.draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank), "x shape"))
    dim = data.draw(st.integers(-rank, rank - 1), "dim")
    d = dim % rank
    ishape = tuple(
        data.draw(st.integers(1, 6)) if i == d else data.draw(st.integers(1, xs[i]))
        for i in range(rank)
    )
    # broadcast dims: the index is constant along them (expanded from size 1)
    core_shape = tuple(
        1 if i != d and data.draw(st.booleans(), f"broadcast {i}") else ishape[i] for i in range(rank)
    )
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    seed = data.draw(st.integers(0, 2**16), "seed")
    x = _source(xs, dtype, seed)
    core = torch.randint(0, xs[d], core_shape, generator=torch.Generator().manual_seed(seed + 1))
    tracer = data.draw(st.sampled_from(["symbolic_trace", "export"]), "tracer")
    model = GatherExpand(dim, ishape)
    lowered = _lower(model, (x, core), tracer)
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(model(x, core), lowered(x, core))
    x2 = _source(xs, dtype, seed + 7)
    core2 = torch.randint(0, xs[d], core_shape, generator=torch.Generator().manual_seed(seed + 2))
    assert_same_outputs(model(x2, core2), lowered(x2, core2))


class AdvancedIndex(nn.Module):
    def __init__(self, positions: list[int], rank: int) -> None:
        super().__init__()
        self.positions, self.rank = positions, rank

    def forward(self, x, i0, i1, i2):
        key = [slice(None)] * self.rank
        for p, t in zip(self.positions, (i0, i1, i2), strict=False):
            key[p] = t
        return x[tuple(key)]


@SETTINGS
@given(data=st.data())
def test_advanced_indexing_any_positions_negative_and_broadcast(data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, 4), "rank")
    xs = tuple(data.draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank), "x shape"))
    positions = sorted(data.draw(
        st.sets(st.integers(0, rank - 1), min_size=1, max_size=min(3, rank)), "positions"))
    srank = data.draw(st.integers(0, 2), "index rank")
    sshape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=srank, max_size=srank)))
    dtype = data.draw(st.sampled_from(DTYPES), "dtype")
    seed = data.draw(st.integers(0, 2**16), "seed")
    g = torch.Generator().manual_seed(seed)
    idx = []
    for p in positions:  # each index broadcastable to sshape (some dims squeezed to 1)
        shp = tuple(1 if torch.rand((), generator=g) < 0.3 else s for s in sshape)
        idx.append(torch.randint(-xs[p], xs[p], shp, generator=g))  # negatives wrap
    idx += [torch.zeros((), dtype=torch.int64)] * (3 - len(idx))  # unused inputs
    x = _source(xs, dtype, seed)
    tracer = data.draw(st.sampled_from(["symbolic_trace", "export"]), "tracer")
    model = AdvancedIndex(positions, rank)
    lowered = _lower(model, (x, *idx), tracer)
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(model(x, *idx), lowered(x, *idx))


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


FORMULATIONS = [
    kernels.DEFAULT,
    kernels.Formulation(pack=False),
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
    x = _source((pre, n, post), dtype, seed)
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
    x = _source(shape, dtype, n)
    known = not dtype.is_floating_point
    if fm.mask == "arith" and dtype.is_floating_point:
        x, known = torch.randn(shape).to(dtype) + 0.0, True
    idx = torch.randint(0, shape[dim], shape)
    y = kernels.gather_elements(EagerBuilder(), x, dim, idx.clone(), x_shape=shape, dtype=dtype,
                                known_finite=known, fm=fm)
    assert_same_outputs(torch.gather(x, dim, idx), y)
