"""Bad input gets a clear error naming the cause; the lowered module stays trainable; the
user's model is never changed; lowering is deterministic."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from helpers import assert_same_outputs, gather_ops_left, lower_quiet, skipped

import fxlower

TRACERS = ["symbolic_trace", "export"]


class GatherEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 6, padding_idx=0)
        self.proj = nn.Linear(6, 6)

    def forward(self, tok, x, idx):
        h = self.proj(self.emb(tok))
        return h[:, 0] + torch.gather(x, 1, idx).sum(-1, keepdim=True) + x[:, idx[0, 0:2]].sum()


def _inputs():
    g = torch.Generator().manual_seed(1)
    tok = torch.tensor([[0, 3, 0, 7], [5, 0, 9, 9]])  # padding index 0 and duplicates
    return tok, torch.randn(2, 5, generator=g), torch.randint(0, 5, (2, 3), generator=g)


class EveryPosition(GatherEmbed):
    """GatherEmbed with every token position reaching the output (GatherEmbed's reads
    position 0 only), so that padding and repeated tokens all get a gradient path."""

    def forward(self, tok, x, idx):
        h = self.proj(self.emb(tok)).sum(1)
        return h + torch.gather(x, 1, idx).sum(-1, keepdim=True) + x[:, idx[0, 0:2]].sum()


@pytest.mark.parametrize("tracer", TRACERS)
def test_gradients_match_the_original(tracer: str) -> None:
    """requires_grad parameters: the lowered module trains like the original, including a
    padding row that gets no gradient and duplicate indices whose gradients add up."""
    def inputs():
        tok, x, _ = _inputs()  # tok: padding index 0 three times; 9 twice in sample 1
        idx = torch.tensor([[3, 3, 1], [4, 0, 4]])  # a repeated column in each row
        return tok, x, idx

    model = EveryPosition().train()
    lowered = lower_quiet(model, inputs(), tracer=tracer)
    assert gather_ops_left(lowered) == {}  # the gradients below flow through mask products
    grads = []
    for m in (model, lowered):
        tok, x, idx = inputs()
        x.requires_grad_(True)
        m.zero_grad()
        m(tok, x, idx).square().sum().backward()
        grads.append({"x": x.grad, **{k: p.grad for k, p in m.named_parameters()}})
    ref, got = grads
    assert set(got) == set(ref) == {"x", "emb.weight", "proj.weight", "proj.bias"}
    for k in ref:  # the input and every parameter
        assert got[k] is not None, k
        assert torch.allclose(ref[k], got[k], rtol=1e-6, atol=1e-6), k
    assert torch.count_nonzero(got["emb.weight"][0]) == 0  # the padding row
    # duplicates add up: in sample 1, token 9 (twice) gets twice token 5's (once) gradient,
    # and column 4 (gathered twice) twice column 0's (once)
    emb, x = got["emb.weight"], got["x"]
    assert torch.count_nonzero(emb[5]) > 0 and torch.allclose(emb[9], 2 * emb[5])
    assert x[1, 0] != 0 and torch.allclose(x[1, 4], 2 * x[1, 0])


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ((torch.tensor([[1, 2]]),), "missing"),  # wrong arity
        ((torch.tensor([[1.5, 2.0]]), torch.randn(2, 5), torch.zeros(2, 3, dtype=torch.long)),
         "Long"),  # float token ids: wrong dtype
        ((torch.tensor([[1, 2]]), torch.randn(2, 5), torch.zeros(3, 3, dtype=torch.long)),
         "Size does not match"),  # wrong shape
    ],
)
def test_bad_example_inputs_are_named(inputs, message: str) -> None:
    with pytest.raises(fxlower.LoweringError, match="the model fails on the example inputs") as e:
        fxlower.lower(GatherEmbed().eval(), inputs)
    assert message in str(e.value)


def test_models_off_the_cpu_are_refused() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(fxlower.LoweringError, match="device 'meta'"):
        fxlower.lower(model, (torch.randn(2, 4),))
    with pytest.raises(fxlower.LoweringError, match="example input is on device 'meta'"):
        fxlower.lower(nn.Linear(4, 4), (torch.randn(2, 4, device="meta"),))


def test_non_tensor_outputs_are_kept() -> None:
    class Mixed(nn.Module):
        def forward(self, x):
            return {"first": x[:, 0], "n": 3, "name": "rows", "nothing": None}

    x = torch.randn(3, 4)
    lowered = lower_quiet(Mixed(), (x,))
    out = lowered(x)
    assert out["n"] == 3 and out["name"] == "rows" and out["nothing"] is None
    assert torch.equal(out["first"], x[:, 0])


@pytest.mark.parametrize("tracer", TRACERS)
def test_in_place_updates_through_views_keep_their_meaning(tracer: str) -> None:
    class InPlace(nn.Module):
        def forward(self, x, idx):
            y = x.clone()
            col = y[:, 0]  # a view: writing to it writes to y
            col.mul_(2)
            rows = y[idx]  # a copy: writing to it leaves y alone
            rows.add_(100)
            return y, rows

    x, idx = torch.randn(4, 3), torch.tensor([2, 0, 2])
    lowered = lower_quiet(InPlace(), (x, idx), tracer=tracer)
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(InPlace()(x, idx), lowered(x, idx))


@pytest.mark.parametrize("tracer", TRACERS)
def test_shared_modules_are_never_merged(tracer: str) -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1, bias=False)
            self.b = nn.Conv2d(8, 4, 3)

        def forward(self, x, z):
            return self.b(self.a(x)), self.a(z)  # `a` is called twice

    inputs = (torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8))
    lowered = lower_quiet(Shared().eval(), inputs, merge="always", tracer=tracer)
    assert not fxlower.report_of(lowered).applied
    assert any("also" in s.reason and "untie" in s.reason for s in skipped(lowered))


@pytest.mark.parametrize("tracer", TRACERS)
def test_user_hooks_stay_registered_and_fire_once_per_run_of_the_model_after_lowering(
        tracer: str) -> None:
    """The user's forward hooks and pre-hooks, on the model and its submodules, are the
    same objects under the same handles after lowering, and each fires once when the
    model runs (lowering works on a snapshot, whose copies of the hooks call the same
    functions: that verification runs the original is tests/test_session.py's)."""
    model = GatherEmbed().eval()
    calls: list[str] = []
    handles = [model.register_forward_hook(lambda m, i, o: calls.append("model")),
               model.register_forward_pre_hook(lambda m, i: calls.append("model pre")),
               model.emb.register_forward_hook(lambda m, i, o: calls.append("emb")),
               model.proj.register_forward_hook(lambda m, i, o: calls.append("proj"))]

    def hooks() -> list[tuple[str, list[tuple[int, object]], list[tuple[int, object]]]]:
        return [(n, list(m._forward_hooks.items()), list(m._forward_pre_hooks.items()))
                for n, m in model.named_modules()]

    before = hooks()
    lower_quiet(model, _inputs(), tracer=tracer)
    assert hooks() == before  # same handle ids, same function objects, same order
    calls.clear()
    model(*_inputs())
    assert sorted(calls) == ["emb", "model", "model pre", "proj"]
    for h in handles:  # the user's handles still remove their hooks
        h.remove()
    calls.clear()
    model(*_inputs())
    assert calls == []


def test_lowering_is_deterministic(tmp_path) -> None:
    model, inputs = GatherEmbed().eval(), _inputs()
    codes, files = [], []
    for k in range(2):
        path = tmp_path / f"m{k}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lowered = fxlower.lower(model, inputs)
            fxlower.api.onnx_export(lowered, inputs, path)
        codes.append(lowered.code)
        files.append(path.read_bytes())
    assert codes[0] == codes[1]
    assert files[0] == files[1]


@pytest.mark.parametrize("tracer", TRACERS)
def test_lowered_module_keeps_the_model_mode_and_eval_tables_stay_cheap(tracer: str) -> None:
    """A new GraphModule starts in training mode; the lowered one must have the model's
    mode, and an eval-mode embedding with padding_idx needs neither the gradient trick nor
    the non-finite code path (its table is a finite parameter)."""
    model = GatherEmbed().eval()
    lowered = lower_quiet(model, _inputs(), tracer=tracer)
    assert lowered.training is False
    (row,) = [a for a in fxlower.report_of(lowered).applied if "10 rows" in a.detail]
    assert "code path" not in row.detail
    assert _padding_row_guards(lowered) == 0  # the table goes into the MatMul as it is
    trained = lower_quiet(GatherEmbed().train(), _inputs(), tracer=tracer)
    assert trained.training is True
    assert _padding_row_guards(trained) == 1  # w - (w - w.detach()) * onehot(padding_idx)


def _padding_row_guards(gm: torch.fx.GraphModule) -> int:
    """The `detach` nodes of the gradient trick that keeps an embedding's padding row
    without gradient in training mode (fxlower.normalise._padding_row_without_grad)."""
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and "detach" in str(n.target))


def test_a_failed_symbolic_trace_does_not_leak_into_torch_export() -> None:
    """A forward traced with proxies may store them on the module before tracing fails;
    torch.export then gets a fresh copy of the model (found in review)."""

    class Cache(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(20, 4)
            self.pos = None

        def forward(self, ids):
            if self.pos is None:
                self.pos = torch.arange(ids.shape[1])  # a Proxy under symbolic_trace
            y = self.tok(ids) + self.pos.unsqueeze(-1)
            if ids.shape[1] > 3:  # symbolic_trace fails here
                y = y * 2
            return y

    ids = torch.randint(1, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    model = Cache().eval()
    low = fxlower.lower(model, (ids,))
    assert fxlower.report_of(low).capture == "torch.export"
    # the Proxy stayed on the traced snapshot: the model holds what its own runs (the
    # verification's runs of the original) stored, a real tensor
    assert type(model.pos) is torch.Tensor and torch.equal(model.pos, torch.arange(5))
    with torch.no_grad():
        assert torch.equal(low(ids), Cache.forward(model, ids))


def test_functional_batch_norm_statistics_are_untouched_by_lowering() -> None:
    """Training-mode F.batch_norm on the module's own buffers (no submodule, no in-place
    op in the graph): lowering's own runs leave the statistics as they were (found in
    review); buffers are always restored, parameters when the module is stateful."""
    import torch.nn.functional as F

    class FBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("rm", torch.zeros(4))
            self.register_buffer("rv", torch.ones(4))

        def forward(self, x, i):
            return F.batch_norm(x, self.rm, self.rv, training=self.training, momentum=0.5)[i]

    g = torch.Generator().manual_seed(0)
    model = FBN().train()
    x, i = torch.randn(8, 4, generator=g) + 3, torch.tensor([2, 5])
    low = fxlower.lower(model, (x, i))
    for m in (model, low):
        assert torch.equal(m.rm, torch.zeros(4)) and torch.equal(m.rv, torch.ones(4))
    with torch.no_grad():
        model(x, i)
        low(x, i)
    assert torch.equal(model.rm, low.rm) and torch.equal(model.rv, low.rv)
