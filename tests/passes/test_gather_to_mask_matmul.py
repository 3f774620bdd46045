"""gather_to_mask_matmul: the MAE pattern's K x N mask (not the index's full size), the
broadcast seen through value-keeping casts, the memory bound on the graph itself, a tiling
repeat that is no broadcast, a constant index as slices or folded, and a property test over
random shapes, dims, dtypes and broadcast structure. The forms on both capture paths and
every dtype: tests/test_gather_forms.py."""

from __future__ import annotations

import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, gather_ops_left, lower_quiet, nonfinite
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, SETTINGS
from strategies import lower_unverified as _lower
from strategies import randint as _i
from strategies import randn as _x
from strategies import source as _source
from test_gather_forms import MaeMasking

TRACERS = ["symbolic_trace", "export"]


def test_mae_uses_k_by_n_mask_not_full_index() -> None:
    x, noise = _x(2, 16, 8), _x(2, 16, seed=3)
    lowered = lower_quiet(MaeMasking(), (x, noise))
    rows = applied(lowered, "gather_to_mask_matmul")
    kept = [r for r in rows if "batched matmul" in r.detail]
    assert len(kept) == 2
    for r in kept:  # B * K * N, not B * K * D * N
        assert r.mask_elems == 2 * 4 * 16
        assert r.macs == 2 * 4 * 16 * 8 + (2 * 4 * 16 * 8) // 8


def test_broadcast_is_seen_through_value_keeping_casts() -> None:
    """ViT-MAE's decoder: gather(x, 1, ids.unsqueeze(-1).repeat(1, 1, D).to(x.device))."""

    class Unshuffle(nn.Module):
        def forward(self, x, ids):
            idx = ids.unsqueeze(-1).repeat(1, 1, x.shape[2])
            return torch.gather(x, 1, idx.to(x.device).long().contiguous())

    x, ids = nonfinite(_x(2, 16, 8)), torch.rand(2, 16).argsort(1)
    for tracer in TRACERS:
        lowered = lower_quiet(Unshuffle(), (x, ids), tracer=tracer)
        (row,) = applied(lowered, "gather_to_mask_matmul")
        assert "batched matmul" in row.detail and row.mask_elems == 2 * 16 * 16
        assert_same_outputs(Unshuffle()(x, ids), lowered(x, ids))


def test_no_tensor_exceeds_the_documented_mask_bound() -> None:
    """Issue 7's memory rule, checked on the graph itself, not just the report: the MAE
    pattern's lowered graph holds no tensor larger than its source or the reported mask
    (B*K*N); the full index-shaped mask would be numel(idx)*N, 64 times the source here."""
    from fxlower import graph as g

    class Gather(nn.Module):
        def forward(self, x, ids):
            return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[2]))

    x, ids = nonfinite(_x(2, 64, 128)), torch.rand(2, 64).argsort(1)[:, :16]
    for tracer in TRACERS:
        lowered = lower_quiet(Gather(), (x, ids), tracer=tracer)
        (row,) = applied(lowered, "gather_to_mask_matmul")
        assert row.mask_elems == 2 * 16 * 64
        g.annotate(lowered, (x, ids))
        sizes = [s.numel for n in lowered.graph.nodes if (s := g.spec(n)) is not None]
        assert max(sizes) <= max(x.numel(), row.mask_elems) < ids.numel() * 128 * 64
        assert_same_outputs(Gather()(x, ids), lowered(x, ids))


def test_repeat_that_tiles_is_not_a_broadcast() -> None:
    class Tile(nn.Module):
        def forward(self, x, ids):
            return torch.gather(x, 1, ids.repeat(1, 1, 2))  # ids [B, K, 2]: tiled, not broadcast

    x, ids = nonfinite(_x(2, 6, 4)), _i(6, 2, 3, 2)
    lowered = lower_quiet(Tile(), (x, ids))
    (row,) = applied(lowered, "gather_to_mask_matmul")
    assert "masked sum" in row.detail
    assert_same_outputs(Tile()(x, ids), lowered(x, ids))


# ---- constant indices -----------------------------------------------------------------

def test_constant_gather_becomes_slices() -> None:
    class ConstGather(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("idx", torch.arange(2, 6).view(1, 4, 1).expand(3, 4, 5).clone())

        def forward(self, x):
            return torch.gather(x, 1, self.idx)

    x = nonfinite(_x(3, 8, 5))
    lowered = lower_quiet(ConstGather(), (x,))
    (row,) = applied(lowered, "gather_to_mask_matmul")
    assert row.detail.startswith("constant index: 1 slice(s)")
    assert row.macs == 0
    assert_same_outputs(ConstGather()(x), lowered(x))


def test_constant_gather_of_a_parameter_is_folded() -> None:
    class ConstGather(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(1)
            self.src = nn.Parameter(torch.randn(6, 30, generator=g))
            self.register_buffer("idx", torch.randint(0, 30, (6, 25), generator=g))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.gather(self.src, 1, self.idx)

    m, x = ConstGather().eval(), torch.randn(6, 25)
    for tracer in ("symbolic_trace", "export"):
        lowered = lower_quiet(m, (x,), tracer=tracer)
        (row,) = applied(lowered, "gather_to_mask_matmul")
        assert row.detail.startswith("constant lookup of a constant source: folded"), row.detail
        assert row.macs == 0
        assert_same_outputs(m(x), lowered(x))


# ---- property test ----------------------------------------------------------------------

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
