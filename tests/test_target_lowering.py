"""Lowering for a target: ops the target runs natively are kept, the others get a
formulation whose ops the target has, and when none exists the error names what is
missing. Every exported file is checked node by node against the profile."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from helpers import assert_same_outputs, nonfinite, skipped

import fxlower
from fxlower.api import onnx_export
from fxlower.check import REASON_INT64, check_file


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(12, 8)

    def forward(self, tok, x, idx):
        h = self.emb(tok)  # Gather
        g = torch.gather(x, 1, idx)  # GatherElements
        a = x[:, idx[0]]  # GatherND
        return h.sum(-1), g, a


def _inputs(finite: bool = False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, generator=g)
    if not finite:
        x = nonfinite(x)
    return torch.randint(0, 12, (2, 5), generator=g), x, torch.randint(0, 7, (3, 4), generator=g)


def _lower(target, inputs, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxlower.lower(Mixed().eval(), inputs, target=target, **kw)


def test_rknn2_keeps_native_gather_and_lowers_the_rest(tmp_path) -> None:
    inputs = _inputs()
    lowered = _lower("rknn2@1.4.0", inputs)
    report = fxlower.report_of(lowered)
    native = {s.op: s.reason for s in skipped(lowered) if "natively" in s.reason}
    assert native["nn.Embedding 'emb'"] == "target 'rknn2@1.4.0' runs Gather natively"
    assert native["indexing 'getitem'"] == "target 'rknn2@1.4.0' runs Gather natively"  # idx[0]
    assert {a.pass_name for a in report.applied} == {"index_to_mask_matmul", "gather_to_mask_matmul"}
    assert all("arithmetic" not in a.detail for a in report.applied)  # rknn2 has Equal
    assert_same_outputs(Mixed().eval()(*inputs), lowered(*inputs))
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fxlower.export(Mixed().eval(), inputs, path, target="rknn2@1.4.0")
    lowered_ops = set(check_file(path).op_counts)
    assert "Gather" in lowered_ops and not {"GatherElements", "GatherND"} & lowered_ops
    assert "Floor" not in lowered_ops  # rknn2 has no Floor: the class codes are not packed
    result = check_file(path, target="rknn2@1.4.0")
    assert result.ok, result.format()


def test_ethos_u55_gets_arithmetic_masks_only_for_finite_sources(tmp_path) -> None:
    with pytest.raises(fxlower.LoweringError,
                       match=r"target 'ethos-u55' allows no exact formulation.*Equal"):
        _lower("ethos-u55", _inputs())
    inputs = _inputs(finite=True)
    lowered = _lower("ethos-u55", inputs, assume_finite=True)
    rows = fxlower.report_of(lowered).applied
    assert rows and all("arithmetic mask" in a.detail or "masked sum" in a.detail
                        or a.pass_name == "select_to_slice" for a in rows)
    assert_same_outputs(Mixed().eval()(*inputs), lowered(*inputs))
    path = tmp_path / "u55.onnx"
    onnx_export(lowered, inputs, path)
    result = check_file(path, target="ethos-u55")
    assert {v.reason for v in result.violations} == {REASON_INT64}, result.format()
    # what remains is named: the model's own int64 token and index inputs
    assert "tok" in result.format() and "idx" in result.format()
    with pytest.raises(fxlower.LoweringError, match="int64"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fxlower.export(Mixed().eval(), inputs, path, target="ethos-u55", assume_finite=True)


def test_kneron_names_what_is_missing() -> None:
    with pytest.raises(fxlower.LoweringError) as e:
        _lower("kneron", _inputs(finite=True), assume_finite=True)
    msg = str(e.value)
    assert "target 'kneron'" in msg and "Cast" in msg


def test_custom_target_object() -> None:
    inputs = _inputs()
    t = fxlower.Target(name="mychip", forbid={"Gather", "GatherElements", "GatherND"})
    lowered = _lower(t, inputs)
    assert len(fxlower.report_of(lowered).applied) == 4
    with pytest.raises(fxlower.LoweringError, match="unknown target|known"):
        _lower("no-such-chip", inputs)


def test_scatter_rewrites_name_what_a_target_lacks() -> None:
    class Put(nn.Module):
        def forward(self, x, i, v):
            return x.index_add(0, i, v)

    inputs = (torch.randn(4, 3), torch.tensor([1, 1, 3]), torch.randn(3, 3))
    with pytest.raises(fxlower.LoweringError, match=r"target 'rknn2@1.4.0' lacks .*Floor"):
        _lower_model(Put(), inputs, "rknn2@1.4.0")
    with pytest.raises(fxlower.LoweringError, match=r"target 'nochips64' has no int64"):
        _lower_model(Put(), inputs, fxlower.Target(name="nochips64", forbid={"ScatterND"},
                                                  int64=False))
    lowered = _lower_model(Put(), inputs, "generic")
    assert_same_outputs(Put()(*inputs), lowered(*inputs))


def _lower_model(model, inputs, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxlower.lower(model, inputs, target=target)
