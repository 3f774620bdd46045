"""Every gather-family form: lowered on both capture paths, the op gone, outputs bit-exact
(non-finite sources included), and each legality condition on both sides."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import (
    applied,
    assert_same_outputs,
    gather_ops_left,
    lower_quiet,
    nonfinite,
    skipped,
)

import fxlower

TRACERS = ["symbolic_trace", "export"]


class Gather(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x, idx):
        return torch.gather(x, self.dim, idx), x.gather(self.dim, idx)


class TakeAlongDim(nn.Module):
    def forward(self, x, idx):
        return torch.take_along_dim(x, idx, 1), torch.take_along_dim(x, idx)


class IndexSelect(nn.Module):
    def forward(self, x, i):
        return torch.index_select(x, 1, i), x.index_select(-1, i[:2]), torch.index_select(x, 0, i[0])


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6, padding_idx=0)
        self.table = nn.Parameter(torch.randn(11, 3))

    def forward(self, tok):
        return self.emb(tok), F.embedding(tok, self.table, padding_idx=2)


class IntSelect(nn.Module):
    def forward(self, x):
        a, b, c = torch.unbind(x, 1)[:3] if False else (x[:, 0], x[..., -1], x.select(1, 2))
        u = torch.unbind(x, 2)
        return a, b, c, u[1], x[1:, -2], x[0, :, 1]


class Advanced(nn.Module):
    def forward(self, x, i, j):
        return x[i], x[:, i], x[i, j], x[:, i, :, j], x[..., i], x[i.unsqueeze(1), j]


class Take(nn.Module):
    def forward(self, x, i):
        return torch.take(x, i), x.take(i.reshape(-1)[:3])


class MaeMasking(nn.Module):
    """The MAE pattern: the index is broadcast along the embedding dim."""

    def forward(self, x, noise):
        b, n, d = x.shape
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, : n // 4]
        kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = (torch.arange(n) >= n // 4).to(x.dtype).expand_as(noise)
        mask = torch.gather(mask, 1, ids_restore)
        kept2 = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        return kept, mask, kept2


class Unfold(nn.Module):
    def forward(self, x):
        return x.unfold(1, 3, 2), x.unfold(-1, 2, 1)


class Attention(nn.Module):
    """nn.MultiheadAttention: symbolic tracing keeps it opaque, so capture uses torch.export."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _i(high: int, *shape: int, seed: int = 1, low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    "gather_dim1": (lambda: Gather(1), lambda: (nonfinite(_x(3, 5, 4)), _i(5, 3, 7, 4))),
    "gather_dim0_smaller": (lambda: Gather(0), lambda: (nonfinite(_x(6, 5)), _i(6, 2, 3))),
    "gather_neg_dim": (lambda: Gather(-1), lambda: (nonfinite(_x(2, 3, 9)), _i(9, 2, 3, 4))),
    "take_along_dim": (TakeAlongDim, lambda: (nonfinite(_x(4, 6)), _i(6, 4, 3))),
    "index_select": (IndexSelect, lambda: (nonfinite(_x(4, 5, 6)), _i(4, 4))),
    "embedding": (Embed, lambda: (_i(11, 2, 7),)),
    "int_select": (IntSelect, lambda: (nonfinite(_x(3, 4, 5)),)),
    "advanced": (Advanced, lambda: (nonfinite(_x(5, 5, 5, 5)), _i(5, 3, low=-5), _i(5, 3, seed=2))),
    "take": (Take, lambda: (nonfinite(_x(3, 4)), _i(12, 2, 5, low=-12))),
    "mae": (MaeMasking, lambda: (nonfinite(_x(2, 16, 8)), _x(2, 16, seed=3))),
    "unfold": (Unfold, lambda: (nonfinite(_x(2, 9, 4)),)),
    "mha": (Attention, lambda: (_x(2, 5, 8),)),
}


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_form_is_lowered_exactly(case: str, tracer: str) -> None:
    make_model, make_inputs = CASES[case]
    torch.manual_seed(0)
    model = make_model().eval()
    inputs = make_inputs()
    if case == "mha" and tracer == "symbolic_trace":  # forced: the module stays opaque
        with pytest.raises(fxlower.LoweringError, match="nn.MultiheadAttention 'mha'"):
            lower_quiet(model, inputs, tracer=tracer)
        return
    lowered = lower_quiet(model, inputs, tracer=tracer)
    report = fxlower.report_of(lowered)
    expected = "torch.export" if tracer == "export" or case == "mha" else "symbolic_trace"
    assert report.capture == expected
    assert report.applied, "no rewrite fired"
    assert report.ops_before, "the census saw no gather-family op before lowering"
    assert gather_ops_left(lowered) == {}
    # mha: the captured graph computes attention with decomposed ops, not the fused eager
    # kernel, so it is equal within fp32 rounding; the rewrites themselves are slices
    assert report.verification["bit_exact"] is (case != "mha")
    if case == "mha":
        assert report.verification["max_abs_error"] < 1e-5
        return
    # fresh draws of every valid input, with non-finite values, stay bit-exact
    for seed in range(3):
        fresh = tuple(
            nonfinite(torch.randn_like(t), seed) if t.is_floating_point()
            else t.reshape(-1)[torch.randperm(t.numel())].reshape(t.shape)  # valid values, shuffled
            for t in inputs
        )
        assert_same_outputs(model(*fresh), lowered(*fresh))


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
    lowered = lower_quiet(Cache().eval(), (ids,), tracer="symbolic_trace")
    assert len(applied(lowered, "index_to_mask_matmul")) == 1
    assert gather_ops_left(lowered) == {}
    assert not any(n.op == "call_method" and n.target == "__getitem__" for n in lowered.graph.nodes)
    assert_same_outputs(Cache().eval()(ids), lowered(ids))


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


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8,
              torch.uint8, torch.bool]
)
@pytest.mark.parametrize("tracer", TRACERS)
def test_dtypes_are_exact(dtype: torch.dtype, tracer: str) -> None:
    class M(nn.Module):
        def forward(self, x, i, j):
            return torch.gather(x, 1, j), x[:, i], x.index_select(0, i[:2]), x[i[0]]

    if dtype == torch.int64:
        x = torch.randint(-(2**62), 2**62, (4, 6))  # far beyond 2**24: not exact through float32
    elif dtype == torch.bool:
        x = torch.rand(4, 6) > 0.5
    elif dtype.is_floating_point:
        x = nonfinite(_x(4, 6)).to(dtype)
    else:
        x = torch.randint(0, 100, (4, 6)).to(dtype)
    i, j = _i(4, 3), _i(6, 4, 5)
    lowered = lower_quiet(M(), (x, i, j), tracer=tracer)
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(M()(x, i, j), lowered(x, i, j))


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


def test_without_example_inputs_only_shape_free_rewrites_apply() -> None:
    class Sel(nn.Module):
        def forward(self, x):
            return x[:, 0] + x[:, -1]

    with pytest.warns(UserWarning, match="verification was skipped"):
        lowered = fxlower.lower(Sel())
    assert len(applied(lowered, "select_to_slice")) == 2
    x = _x(3, 4)
    assert_same_outputs(Sel()(x), lowered(x))

    with pytest.raises(fxlower.LoweringError, match="shapes unknown"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fxlower.lower(Gather(1))


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


# ---- the API's promises ---------------------------------------------------------------

def test_user_model_is_never_changed() -> None:
    model = Embed()
    model.train()
    calls: list[int] = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    before = copy.deepcopy(model.state_dict())
    ids = {k: id(v) for k, v in model.named_parameters()}
    lowered = lower_quiet(model, (_i(11, 2, 7),))
    assert model.training is True
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert ids == {k: id(v) for k, v in model.named_parameters()}
    assert len(model._forward_hooks) == 1
    # the lowered module owns its own parameters
    for p in lowered.parameters():
        assert all(p is not q for q in model.parameters())


def test_output_pytree_is_kept() -> None:
    class Dict(nn.Module):
        def forward(self, x, i):
            return {"sel": x[:, 0], "rows": (x[i], [x.gather(1, i.unsqueeze(1))])}

    x, i = _x(4, 3), _i(3, 2)
    for tracer in TRACERS:
        lowered = lower_quiet(Dict(), (x, i), tracer=tracer)
        out = lowered(x, i)
        assert set(out) == {"sel", "rows"}
        assert isinstance(out["rows"], tuple) and isinstance(out["rows"][1], list)
        assert_same_outputs(Dict()(x, i), out)


def test_untraceable_model_names_both_tracers() -> None:
    class Bad(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow defeats both tracers
                return x[:, 0]
            return x[:, 1]

    with pytest.raises(fxlower.LoweringError, match="symbolic_trace.*torch.export"):
        fxlower.lower(Bad(), (_x(2, 3),))


class _Broken:
    """A deliberately broken index rewrite (adds 1), for the culprit finding."""

    @staticmethod
    def passes():
        from fxlower.passes import PASSES
        from fxlower.passes.index_to_mask_matmul import IndexToMaskMatmul

        class Broken(IndexToMaskMatmul):
            def replace(self, node, plan, b):
                return (b.proxy(super().replace(node, plan, b)) + 1).node

        return [Broken() if isinstance(p, IndexToMaskMatmul) else p for p in PASSES]


class Many(nn.Module):
    """Several rewrites, one of which (x[i], the index one) the broken pass gets wrong."""

    def forward(self, x, i):
        return x[:, 0], x[:, -1], torch.gather(x, 1, i.unsqueeze(1) % 3), x[i], x.select(0, 1)


def test_bisection_names_the_broken_rewrite() -> None:
    with pytest.raises(fxlower.VerificationError,
                       match=r"caused by rewrite index_to_mask_matmul:index") as e:
        fxlower.lower(Many(), (_x(4, 3), _i(4, 2)), passes=_Broken.passes(), on_mismatch="raise")
    assert "max abs error" in str(e.value) or "differ" in str(e.value)


def test_broken_rewrite_is_rolled_back_and_reported() -> None:
    x, i = _x(4, 3), _i(4, 2)
    with pytest.raises(fxlower.LoweringError, match="rolled back because verification failed"):
        lower_quiet(Many(), (x, i), passes=_Broken.passes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(Many(), (x, i), passes=_Broken.passes(), on_forbidden="warn")
    report = fxlower.report_of(lowered)
    assert len(report.rolled_back) == 1
    assert report.rolled_back[0].startswith("index_to_mask_matmul:index")
    assert "output[3]" in report.rolled_back[0]
    assert len(report.applied) == 4  # the other rewrites stay
    assert "rolled back" in report.format()
    assert_same_outputs(Many()(x, i), lowered(x, i))


class TopkGather(nn.Module):
    """The 5-D attention pattern: gather weights at their own top-k indices."""

    def forward(self, w, other):
        idx = torch.topk(w, 3, dim=2).indices
        sorted_idx = torch.sort(w, dim=-1, descending=True).indices
        return (torch.gather(w, 2, idx), torch.gather(w, -1, sorted_idx),
                torch.gather(w, 1, torch.argsort(w, dim=1)), torch.gather(other, 2, idx))


@pytest.mark.parametrize("tracer", TRACERS)
def test_gather_at_own_topk_indices_is_the_values(tracer: str) -> None:
    w = nonfinite(_x(2, 3, 6, 4, 5))
    other = nonfinite(_x(2, 3, 6, 4, 5, seed=4))
    lowered = lower_quiet(TopkGather(), (w, other), tracer=tracer)
    rows = applied(lowered, "topk_gather_to_values")
    assert sorted(r.detail.split(":")[0] for r in rows) == [
        "gather at its own argsort indices", "gather at its own sort indices",
        "gather at its own topk indices"]
    assert all(r.macs == 0 and r.mask_elems == 0 for r in rows)
    # the gather of another tensor at those indices still needs (and gets) a mask
    assert [s.reason for s in skipped(lowered) if s.pass_name == "topk_gather_to_values"] == [
        "the index comes from a topk of another tensor, not of the gathered one"]
    assert len(applied(lowered, "gather_to_mask_matmul")) == 1
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(TopkGather()(w, other), lowered(w, other))


def test_topk_along_another_dim_is_refused() -> None:
    class OtherDim(nn.Module):
        def forward(self, w):
            return torch.gather(w, 1, torch.topk(w, 2, dim=0).indices)

    w = _x(4, 4)
    lowered = lower_quiet(OtherDim(), (w,))
    assert any(s.reason == "the topk runs along another dim than the gather"
               for s in skipped(lowered))
    assert_same_outputs(OtherDim()(w), lowered(w))


def test_a_capture_that_differs_is_not_blamed_on_a_rewrite() -> None:
    class Stateful(nn.Module):
        """Python state the tracer bakes in: the captured graph differs from the model."""

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x[:, 0] * self.calls

    with pytest.raises(fxlower.VerificationError, match="captured graph differs from the model"):
        lower_quiet(Stateful(), (_x(3, 2),))
