"""The lowering session (issue 13): the model is snapshot, never copied whole (parameters
shared, buffers cloned, the user's objects untouched); captured and normalised once however
many re-lowerings a rollback needs; shapes come from torch.export's FakeTensors and the meta
device, not from running the graph; the original runs once per verification input."""

from __future__ import annotations

import torch
import torch.nn as nn
from helpers import lower_quiet

import fxlower
import fxlower.api
from fxlower import graph


class Embed(nn.Module):
    def __init__(self, max_norm: float | None = None) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8, max_norm=max_norm)
        self.proj = nn.Linear(8, 4)
        self.register_buffer("scale", torch.full((4,), 2.0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.emb(ids)) * self.scale


IDS = (torch.tensor([[1, 7, 49, 0], [3, 3, 8, 21]]),)


def test_snapshot_shares_parameter_storage_not_objects_and_clones_buffers() -> None:
    m = Embed()
    snap = graph.snapshot(m)
    assert snap is not m and snap.emb is not m.emb
    assert snap.emb.weight is not m.emb.weight
    assert snap.emb.weight.data_ptr() == m.emb.weight.data_ptr()  # no copy of the bulk
    assert snap.scale.data_ptr() != m.scale.data_ptr()  # buffers: a forward may write them
    snap.double()  # the float64 twin widens the snapshot, never the user's model
    assert m.emb.weight.dtype == torch.float32 and snap.emb.weight.dtype == torch.float64


def test_a_module_that_writes_its_parameters_gets_its_own_copy() -> None:
    m = Embed(max_norm=1.0)
    snap = graph.snapshot(m)
    assert snap.emb.weight.data_ptr() != m.emb.weight.data_ptr()
    assert snap.proj.weight.data_ptr() == m.proj.weight.data_ptr()


def test_lowering_shares_parameters_and_leaves_the_model_as_it_was() -> None:
    m = Embed().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    low = lower_quiet(m, IDS)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    ptrs = {p.data_ptr() for p in m.parameters()}
    assert any(p.data_ptr() in ptrs for p in low.parameters())  # shared, like ep.module()
    assert torch.equal(low(*IDS), m(*IDS))


def test_a_rollback_relowers_from_the_one_capture(monkeypatch) -> None:
    calls = []
    real = fxlower.api.capture

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(fxlower.api, "capture", counting)
    bad = {"n": 0}

    class Corrupting(fxlower.rewrite.RewritePass):  # a pass that changes values: rolled back
        name = "corrupting"

        def match(self, node, ctx):
            hit = node.op == "call_function" and node.target is torch.ops.aten.mul.Tensor
            return node if hit else None

        def check(self, node, ctx):
            bad["n"] += 1
            return fxlower.rewrite.Plan(detail="wrong on purpose")

        def replace(self, plan, b):
            return graph.node_of(torch.ops.aten.add.Tensor(b.proxy(b.anchor.args[0]), 1.0))

    from fxlower.passes import PASSES

    low = lower_quiet(Embed().eval(), IDS, tracer="export", passes=[Corrupting(), *PASSES])
    report = fxlower.report_of(low)
    assert report.rolled_back and report.rolled_back[0].startswith("corrupting:")
    assert len(calls) == 1  # bisection and re-lowering reuse the normalised graph
    assert bad["n"] > 1  # ... and re-ran the passes on it


def test_export_path_shapes_never_run_the_graph(monkeypatch) -> None:
    runs = []
    real = graph._Annotator.run

    def counting(self, *a, **kw):
        runs.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(graph._Annotator, "run", counting)
    low = lower_quiet(Embed().eval(), IDS, tracer="export")
    assert fxlower.report_of(low).applied  # rewrites ran and needed shapes
    assert runs == []
    assert all(graph.VAL in n.meta for n in low.graph.nodes if n.op not in ("output",)
               and n.users)


def test_the_original_runs_once_per_verification_input(monkeypatch) -> None:
    m = Embed().eval()
    seen = []
    m.register_forward_hook(lambda mod, args, out: seen.append(1))
    lower_quiet(m, IDS)
    assert len(seen) == 3  # the example inputs and two fresh draws
