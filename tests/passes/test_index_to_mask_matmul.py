"""index_to_mask_matmul: indexing a buffer, constant indices without a run-time mask, the
refusals (boolean mask index, embedding max_norm), constant folding of constant lookups
(passes/_common.py `fold_lookup`, issue 12: a table looked up by an index both known when
lowering becomes one constant of the looked-up values, never a precomputed one-hot; each
legality condition on both sides), and a property test over random index positions,
negative and broadcast indices. The forms on both capture paths and every dtype:
tests/test_gather_forms.py."""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import (
    applied,
    assert_same_outputs,
    gather_ops_left,
    lower_quiet,
    nonfinite,
    skipped,
)
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, SETTINGS
from strategies import lower_unverified as _lower
from strategies import randint as _i
from strategies import randn as _x
from strategies import source as _source

import fxlower
from fxlower.api import onnx_export
from fxlower.check import check_file
from fxlower.targets import Condition


def test_indexing_a_buffer_is_lowered() -> None:
    """symbolic_trace records `self.buffer[ids]` as call_method __getitem__ (a proxy's is
    operator.getitem): it was neither normalised nor counted, so lower() said "nothing
    remains" with the gather still in the graph (found in review)."""

    class Cache(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("cache", torch.randn(10, 4))

        def forward(self, ids):
            return self.cache[ids] * 1.0

    ids = torch.tensor([4, 0, 9])
    model = Cache().eval()
    lowered = lower_quiet(model, (ids,), tracer="symbolic_trace")
    assert len(applied(lowered, "index_to_mask_matmul")) == 1
    assert gather_ops_left(lowered) == {}
    assert not any(n.op == "call_method" and n.target == "__getitem__" for n in lowered.graph.nodes)
    assert_same_outputs(model(ids), lowered(ids))  # the same model: its own random buffer


def test_constant_index_needs_no_runtime_mask() -> None:
    class Const(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("rows", torch.tensor([0, 1, 2, 5, 7, 9]))
            self.register_buffer("perm", torch.randperm(40, generator=torch.Generator().manual_seed(0)))

        def forward(self, x):
            return x[:, self.rows], x[:, self.perm], x.index_select(1, torch.arange(0, 40, 3))

    x = nonfinite(_x(3, 40))
    lowered = lower_quiet(Const(), (x,))
    rows = applied(lowered, "index_to_mask_matmul")
    assert [r.detail.split(",")[0] for r in rows] == [
        "constant index: 2 slice(s)",
        "constant index: precomputed one-hot matmul",
        "constant index: 1 slice(s)",
    ]
    # no run-time index comparison: the only index constants are precomputed one-hots
    consts = [str(n.target) for n in lowered.graph.nodes if n.op == "get_attr"]
    assert not any(c.startswith("_fxl_arange") for c in consts), consts
    assert any(c.startswith("_fxl_onehot") for c in consts), consts
    assert_same_outputs(Const()(x), lowered(x))


# ---- legality: the refused side -------------------------------------------------------

def test_boolean_mask_index_is_refused_with_reason() -> None:
    class Mask(nn.Module):
        def forward(self, x, m):
            return x[m]

    x, m = _x(4, 5), _x(4, 5) > 0
    with pytest.raises(fxlower.LoweringError, match="forbidden ops remain"):
        lower_quiet(Mask(), (x, m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(Mask(), (x, m), on_forbidden="warn", tracer="export")
    reasons = [s.reason for s in skipped(lowered)]
    assert any("boolean mask index" in r for r in reasons)
    assert fxlower.report_of(lowered).remaining


def test_embedding_max_norm_is_refused_with_reason() -> None:
    model = nn.Sequential(nn.Embedding(10, 4, max_norm=1.0))
    tok = _i(10, 2, 3)
    with pytest.raises(fxlower.LoweringError, match="max_norm renormalises"):
        lower_quiet(model, (tok,))


# ---- constant folding of constant lookups ------------------------------------------------

class RelPosBias(nn.Module):
    """BEiT/Swin's relative position bias: a [N, H] parameter table indexed by a constant
    [K] buffer of random rows (far more than 16 runs, so no slices)."""

    def __init__(self, n: int = 60, heads: int = 4, k: int = 400) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = nn.Parameter(torch.randn(n, heads, generator=g))
        self.register_buffer("index", torch.randint(0, n, (k,), generator=g))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        bias = self.table[self.index.view(-1)].view(20, -1, self.table.shape[1])
        return scores + bias.permute(2, 0, 1)


def _scores(m: RelPosBias) -> torch.Tensor:
    return torch.randn(m.table.shape[1], 20, m.index.numel() // 20)


def _rows(lowered: torch.fx.GraphModule) -> list[str]:
    return [a.detail for a in applied(lowered, "index_to_mask_matmul")]


def _consts(lowered: torch.fx.GraphModule) -> list[str]:
    return [str(n.target) for n in lowered.graph.nodes if n.op == "get_attr"]


def test_eval_mode_lookup_is_folded_bit_exact_and_small() -> None:
    m = RelPosBias().eval()
    s = _scores(m)
    for tracer in ("symbolic_trace", "export"):
        lowered = lower_quiet(m, (s,), tracer=tracer)
        (detail,) = _rows(lowered)
        assert detail.startswith("constant lookup of a constant source: folded"), detail
        assert not any(c.startswith("_fxl_onehot") for c in _consts(lowered))
        assert gather_ops_left(lowered) == {}
        assert_same_outputs(m(s), lowered(s))
    with tempfile.TemporaryDirectory() as d:
        plain, low = os.path.join(d, "plain.onnx"), os.path.join(d, "low.onnx")
        onnx_export(m, (s,), plain)
        report = fxlower.export(m, (s,), low)
        assert report.onnx["forbidden"] == 0
        # the size rule of issue 12: never more than 1.25x the plain export + 256 KB
        assert os.path.getsize(low) <= 1.25 * os.path.getsize(plain) + 256 * 1024


def test_training_mode_keeps_the_one_hot_so_the_table_learns() -> None:
    m = RelPosBias().train()
    s = _scores(m)
    lowered = lower_quiet(m, (s,), tracer="symbolic_trace")
    (detail,) = _rows(lowered)
    assert detail.startswith("constant index: precomputed one-hot matmul"), detail
    m(s).sum().backward()
    lowered(s).sum().backward()
    lowered_table = dict(lowered.named_parameters())["table"]
    assert m.table.grad is not None and lowered_table.grad is not None
    assert torch.equal(m.table.grad, lowered_table.grad)


def test_training_mode_with_a_frozen_table_is_folded() -> None:
    m = RelPosBias().train()
    m.table.requires_grad_(False)
    s = _scores(m)
    (detail,) = _rows(lower_quiet(m, (s,), tracer="symbolic_trace"))
    assert detail.startswith("constant lookup of a constant source: folded"), detail


def test_fold_larger_than_the_one_hot_is_refused() -> None:
    m = RelPosBias(n=4, heads=64, k=400).eval()  # K*R = 25,600 values > K*N = 1,600
    s = _scores(m)
    lowered = lower_quiet(m, (s,), tracer="symbolic_trace")
    (detail,) = _rows(lowered)
    assert detail.startswith("constant index: precomputed one-hot matmul"), detail
    assert_same_outputs(m(s), lowered(s))


def test_input_dependent_source_is_not_folded() -> None:
    class Perm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("perm", torch.randperm(40, generator=torch.Generator().manual_seed(0)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, self.perm]

    x = torch.randn(3, 40)
    lowered = lower_quiet(Perm().eval(), (x,))
    (detail,) = _rows(lowered)
    assert detail.startswith("constant index: precomputed one-hot matmul"), detail


# ---- property test ----------------------------------------------------------------------

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


# ---- formulation 0: the target's own Gather, in pieces that meet its conditions


class _Lookup(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.emb = nn.Embedding(50, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.how == "embedding":
            return self.emb(ids)
        if self.how == "index_select":
            return torch.index_select(self.emb.weight, 0, ids.reshape(-1))
        return self.emb.weight[ids]  # advanced indexing: negative indices allowed


def _pieces(low: torch.fx.GraphModule) -> list[str]:
    return [a.detail for a in applied(low, "index_to_mask_matmul") if "piece" in a.detail]


def test_pieces_meet_kneron_single_index_and_tidl_one_dimensional_conditions() -> None:
    ids = torch.randint(0, 50, (3, 4))
    for how in ("embedding", "index_select"):
        m = _Lookup(how).eval()
        for target, expect in (("kneron", "12 piece(s) of at most 1 index"),
                               ("tidl", "1 piece(s) of at most 12 index")):
            low = lower_quiet(m, (ids,), target=target)
            if how == "index_select" and target == "tidl":  # a 1-D index: kept as it is
                assert _pieces(low) == [] and "runs Gather natively" in str(skipped(low))
            else:
                assert [expect in d for d in _pieces(low)] == [True], (how, target)
            assert torch.equal(low(ids), m(ids))
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "m.onnx")
                fxlower.export(m, (ids,), path, target=target)
                assert check_file(path, target=target).ok


def test_pieces_refused_where_negative_indices_need_a_wrap_the_target_cannot_do() -> None:
    ids = torch.randint(-50, 50, (3, 4))
    m = _Lookup("getitem").eval()
    with pytest.raises(fxlower.LoweringError, match="allows no exact formulation"):
        lower_quiet(m, (ids,), target="kneron")  # no Less/Where to wrap, no Equal/Cast either
    # a target with the comparisons wraps them first, and its Gather takes 1-D indices only
    t = fxlower.Target(name="cmp1d", forbid={"GatherND", "GatherElements"},
                       conditions={"Gather": (Condition(
                           "indices_max_rank", 1, "1-D indices"),)})
    low = lower_quiet(m, (ids,), target=t)
    assert len(_pieces(low)) == 1 and torch.equal(low(ids), m(ids))


def test_pieces_refused_beyond_the_piece_limit_or_without_slice() -> None:
    m = _Lookup("embedding").eval()
    ids = torch.randint(0, 50, (2, 300))  # 600 single-index pieces > 512
    with pytest.raises(fxlower.LoweringError, match="allows no exact formulation"):
        lower_quiet(m, (ids,), target="kneron")
    one = Condition("indices_max_elems", 1, "a single index")
    t = fxlower.Target(name="noslice", forbid={"Slice", "GatherND"}, conditions={"Gather": (one,)})
    low = lower_quiet(m, (torch.randint(0, 50, (3, 4)),), target=t)
    assert _pieces(low) == []  # the one-hot product instead
    assert applied(low, "index_to_mask_matmul")
