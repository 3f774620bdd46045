"""embedding="host" (issue 7): table lookups split off the device graph.

Applied: a stored table looked up by an index taken from the inputs (directly or through
index bookkeeping), on both capture paths; the device graph then has no gather-family op and
takes the rows as an input, host-then-device equals the model bit for bit, and `export`
writes the device file (gather-free, checked) and the host file beside it.
Refused (the lookup stays a one-hot product on the device, with the reason): an index the
network computes, a table the model computes. Not a host lookup: a constant index.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

import fxlower
from fxlower import census
from fxlower.check import check_file


class Lookup(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(50, 8, padding_idx=0)
        self.pos = nn.Embedding(16, 8)
        self.proj = nn.Linear(8, 8)
        self.register_buffer("positions", torch.arange(16))

    def forward(self, ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids.reshape(-1, 5) + 1) + self.pos(self.positions[:5])
        return self.proj(x) * scale


class ComputedIndex(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tok(x.argmax(-1))


class ComputedTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.w * 2)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 49, (2, 5), generator=g), torch.randn(2, 5, 8, generator=g)


@pytest.mark.parametrize("tracer", ["symbolic_trace", "export"])
def test_lookup_moves_to_the_host(tracer: str) -> None:
    torch.manual_seed(0)
    model = Lookup().eval()
    before = copy.deepcopy(model.state_dict())
    ids, scale = _inputs()
    low = fxlower.lower(model, (ids, scale), embedding="host", tracer=tracer)
    rep = fxlower.report_of(low)
    assert [h["table"] for h in rep.host] == ["tok.weight"]
    h = rep.host[0]
    assert h["table_shape"] == (50, 8) and h["rows_shape"] == (2, 5, 8)
    assert h["device_flops_saved"] == 2 * 50 * 2 * 5 * 8
    assert census.remaining(low.device, census.forbidden_by(None)) == []
    assert not rep.remaining
    # the positional lookup has a constant index: constant rows on the device, not the host
    assert any(a.op.startswith(("nn.Embedding 'pos'", "aten.embedding")) for a in rep.applied)
    with torch.no_grad():
        ref = model(ids, scale)
        for args in [(ids, scale), (torch.randint(0, 49, (2, 5)), torch.randn(2, 5, 8))]:
            assert torch.equal(low(*args), model(*args))
        rows = low.host(ids, scale)[-1]
        assert torch.equal(rows, model.tok.weight[ids + 1])
    assert torch.equal(low(ids, scale).detach(), ref)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_index_the_network_computes_stays_on_the_device() -> None:
    x = torch.randn(3, 6)
    low = fxlower.lower(ComputedIndex().eval(), (x,), embedding="host")
    rep = fxlower.report_of(low)
    assert rep.host == []
    assert any(s.pass_name == "host" and "computed by the model" in s.reason for s in rep.skipped)
    assert [a.pass_name for a in rep.applied] == ["index_to_mask_matmul"]
    assert not rep.remaining


def test_a_computed_table_stays_on_the_device() -> None:
    ids = torch.tensor([[1, 5, 0]])
    low = fxlower.lower(ComputedTable().eval(), (ids,), embedding="host")
    rep = fxlower.report_of(low)
    assert rep.host == []
    assert any(s.pass_name == "host" and "table is computed in the graph" in s.reason
               for s in rep.skipped)
    assert not rep.remaining


def test_bad_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="embedding must be"):
        fxlower.lower(ComputedTable(), (torch.tensor([1]),), embedding="gather")


def test_export_writes_the_device_and_the_host_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Lookup().eval()
    ids, scale = _inputs()
    path = tmp_path / "m.onnx"
    rep = fxlower.export(model, (ids, scale), path, embedding="host")
    host_path = Path(rep.onnx["host_path"])
    assert host_path == tmp_path / "m.host.onnx"
    assert check_file(path).ok
    assert "GatherND" in check_file(host_path).op_counts  # the lookup itself, on the host
    hs = ort.InferenceSession(str(host_path), providers=["CPUExecutionProvider"])
    ds = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = dict(zip([i.name for i in hs.get_inputs()], [ids.numpy(), scale.numpy()], strict=True))
    dev_in = hs.run(None, feed)
    names = [i.name for i in ds.get_inputs()]
    out = ds.run(None, dict(zip(names, dev_in, strict=True)))[0]
    with torch.no_grad():
        ref = model(ids, scale).numpy()
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()  # onnxruntime's Gemm rounds its own way


class Tied(nn.Module):
    """One table looked up twice (tied embeddings), and a forward with a default argument."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(20, 4)

    def forward(self, ids: torch.Tensor, other: torch.Tensor, k: float = 2.0) -> torch.Tensor:
        return self.tok(ids) * k + self.tok(other)


class MaskRows(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(10, 4))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.w[m].sum(0)


@pytest.mark.parametrize("tracer", ["symbolic_trace", "export"])
def test_a_table_looked_up_twice_gets_one_input_per_lookup(tracer: str) -> None:
    torch.manual_seed(0)
    model = Tied().eval()
    ids, other = torch.randint(0, 20, (2, 5)), torch.randint(0, 20, (2, 5))
    low = fxlower.lower(model, (ids, other), embedding="host", tracer=tracer)
    rows = [h["rows_input"] for h in fxlower.report_of(low).host]
    assert len(rows) == 2 and len(set(rows)) == 2
    with torch.no_grad():
        assert torch.equal(low(ids, other), model(ids, other))
        if tracer == "symbolic_trace":  # the model's default stays a default
            assert torch.equal(low(ids, other, 3.0), model(ids, other, 3.0))


def test_a_boolean_mask_lookup_stays_on_the_device_with_the_reason() -> None:
    m = torch.rand(10, generator=torch.Generator().manual_seed(0)) > 0.5
    with pytest.raises(fxlower.LoweringError, match="not an integer tensor"):
        fxlower.lower(MaskRows().eval(), (m,), embedding="host", tracer="export")
