"""Issue 12's rules for real models: verification inputs under the user's control, and
`export` never calling a file clean that is not (`on_forbidden="warn"` writes it and says
what remains)."""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import assert_same_outputs, lower_quiet

import fxlower


class Offsets(nn.Module):
    """Valid inputs are narrower than the example's value ranges: ids + offsets < 6."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.emb(ids + offsets)


EXAMPLE = (torch.tensor([[0, 5, 1]]), torch.tensor([[4, 0, 1]]))
VALID = [(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 0]])),
         (torch.tensor([[0, 0, 5]]), torch.tensor([[0, 1, 0]]))]


def test_draws_the_original_rejects_are_skipped_then_verify_inputs_is_asked_for() -> None:
    m = Offsets().eval()
    with pytest.raises(fxlower.VerificationError,
                       match="original model fails on every fresh draw.*verify_inputs"):
        lower_quiet(m, EXAMPLE)


def test_verify_inputs_replace_the_fresh_draws() -> None:
    m = Offsets().eval()
    lowered = lower_quiet(m, EXAMPLE, verify_inputs=VALID)
    figures = fxlower.report_of(lowered).verification
    assert figures["runs"] == 3 and figures["inputs"] == "example inputs + verify_inputs"
    assert "skipped_draws" not in figures
    for inputs in VALID:
        assert_same_outputs(m(*inputs), lowered(*inputs))


def test_verify_inputs_the_original_fails_on_are_an_error_naming_them() -> None:
    bad = [(torch.tensor([[5, 5, 5]]), torch.tensor([[4, 4, 4]]))]
    with pytest.raises(fxlower.VerificationError, match=r"fails on verify_inputs\[0\]: IndexError"):
        lower_quiet(Offsets().eval(), EXAMPLE, verify_inputs=bad)


def test_verify_inputs_of_the_wrong_arity_are_refused() -> None:
    with pytest.raises(fxlower.LoweringError, match=r"verify_inputs\[0\] must be a tuple of 2"):
        lower_quiet(Offsets().eval(), EXAMPLE, verify_inputs=[(EXAMPLE[0],)])


def test_export_checks_onnxruntime_on_verify_inputs_too() -> None:
    m = Offsets().eval()
    with tempfile.TemporaryDirectory() as d:
        report = fxlower.export(m, EXAMPLE, os.path.join(d, "m.onnx"), verify_inputs=VALID)
    assert report.onnx["forbidden"] == 0
    assert report.onnx["ort_max_abs_error"] == 0.0


class Pool(nn.Module):
    """An adaptive pool whose output size does not divide its input exports to a Gather
    (through as_strided) that no rewrite removes."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def test_export_on_forbidden_warn_writes_the_file_and_names_what_remains() -> None:
    x = torch.randn(1, 4, 7)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pool.onnx")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = fxlower.export(Pool().eval(), (x,), path, on_forbidden="warn")
        assert os.path.exists(path)
    assert any("forbidden ops" in str(w.message) for w in caught)
    assert report.onnx["forbidden"] >= 1
    assert any("Gather" in r for r in report.onnx["remaining"])
    assert report.remaining, "the report must not say clean when the file is not"
    assert "none" not in report.format().split("after:")[1].splitlines()[0]


def test_export_on_forbidden_raise_names_the_file_s_op() -> None:
    with tempfile.TemporaryDirectory() as d, pytest.raises(fxlower.LoweringError, match="Gather"):
        fxlower.export(Pool().eval(), (torch.randn(1, 4, 7),), os.path.join(d, "p.onnx"))


class MaxPoolNoOnnx(nn.Module):
    """adaptive_max_pool2d with windows that do not tile: the exporter has no ONNX function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_max_pool2d(x * 2, (3, 3)) + 1


def test_export_failure_names_node_cause_and_whether_the_original_exports() -> None:
    with tempfile.TemporaryDirectory() as d, pytest.raises(fxlower.LoweringError) as info:
        fxlower.export(MaxPoolNoOnnx(), (torch.randn(1, 2, 7, 7),), os.path.join(d, "m.onnx"))
    msg = str(info.value)
    assert "at node 'adaptive_max_pool2d'" in msg
    assert "No ONNX function found" in msg
    assert "the original model does not export either" in msg
    assert "custom_translation_table" in msg


def test_export_failure_of_a_view_suggests_eager_attention(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Without capture's contiguous -> clone, the SDPA layout bug reaches the lowered module
    as it reaches the original: the message says so and names the remedy."""
    from test_corpus import _BiasedAttention

    import fxlower.capture

    monkeypatch.setattr(fxlower.capture, "_copy_instead_of_contiguous", lambda n: False)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d, pytest.raises(fxlower.LoweringError) as info:
        fxlower.export(_BiasedAttention().eval(), (torch.randn(2, 8, 16),),
                       os.path.join(d, "m.onnx"))
    msg = str(info.value)
    assert "Cannot view a tensor" in msg and "attn_implementation='eager'" in msg
    assert "the original model does not export either" in msg
