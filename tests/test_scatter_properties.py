"""Property-based tests of the scatter passes: random shapes, dims, dtypes, index values
(duplicated, negative where the op wraps them), broadcast structure, accumulate or assign,
both capture paths; the lowered graph against PyTorch's CPU op, bit-exact. Sizes stay small,
so PyTorch's kernels run serially (their last-writer and summation orders are the
documented guarantee) and float sums have at most 64 writers (the bit-exact path). Every
drawn case is legal: a refusal here is a failure."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, nonfinite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxlower
from fxlower import scatter_ops
from fxlower.census import census
from fxlower.graph import EagerBuilder

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.uint8, torch.bool]
TRACERS = ["symbolic_trace", "export"]
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCATTER_GATHER = frozenset({"ScatterND", "ScatterElements", "Scatter", "Gather",
                            "GatherElements", "GatherND"})


def _source(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype == torch.int64:
        return torch.randint(-(2**62), 2**62, shape, generator=g)
    if not dtype.is_floating_point:
        return torch.randint(0, 120, shape, generator=g).to(dtype)
    x = torch.randn(shape, generator=g) * 100
    return (nonfinite(x, seed) if x.numel() else x).to(dtype)


def _lower_and_compare(model: nn.Module, runs: list[tuple], tracer: str, pass_name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(model, runs[0], verify=False, tracer=tracer)
    assert applied(lowered, pass_name), fxlower.report_of(lowered).skipped
    assert census(lowered, SCATTER_GATHER) == {}
    assert scatter_ops.remaining(lowered) == []
    for args in runs:
        assert_same_outputs(model(*args), lowered(*args))


def _shape(data: st.DataObject, rank: int, lo: int = 1, hi: int = 5) -> tuple[int, ...]:
    return tuple(data.draw(st.lists(st.integers(lo, hi), min_size=rank, max_size=rank)))


# ---- slice_scatter_to_concat --------------------------------------------------------------

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


# ---- scatter_to_mask_matmul --------------------------------------------------------------

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


# ---- index_put_to_mask_matmul -------------------------------------------------------------

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


# ---- masked_scatter_to_mask_matmul --------------------------------------------------------

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


# ---- the kernels eagerly, on many more cases than the graph tests afford ----------------

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
