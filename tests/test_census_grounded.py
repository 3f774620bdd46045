"""The census against the file: for ops the exporter turns into gathers or scatters through
its decompositions (docs/exporter-ops.md, "Grounded census"), what `lower` reports as left
is exactly what the exported file holds, op type by op type (clean exactly when clean)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import lower_quiet

import fxlower
from fxlower.api import onnx_export
from fxlower.check import check_file

FAMILY = ("Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND")


class Fn(nn.Module):
    def __init__(self, f: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


def _unpool(x: torch.Tensor) -> torch.Tensor:
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    return F.max_unpool2d(y, idx, 2)


def _nll(x: torch.Tensor) -> torch.Tensor:
    target = torch.zeros(x.shape[0], x.shape[2], dtype=torch.long)
    return F.nll_loss(x.log_softmax(1), target, reduction="none")


x3, x4 = torch.randn(2, 4, 7), torch.randn(1, 2, 6, 6)
CASES: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
    "pool1d 7->3 (GatherND)": (nn.AdaptiveAvgPool1d(3), (x3,)),
    "pool1d 7->2 (varying windows)": (nn.AdaptiveAvgPool1d(2), (x3,)),
    "pool1d 8->4 (tiles: mean)": (nn.AdaptiveAvgPool1d(4), (torch.randn(2, 4, 8),)),
    "pool2d 6->(4, None)": (Fn(lambda x: F.adaptive_avg_pool2d(x, (4, None))), (x4,)),
    "nearest-exact": (nn.Upsample(scale_factor=2, mode="nearest-exact"), (x4,)),
    "linear 1-D": (nn.Upsample(scale_factor=2, mode="linear"), (x3,)),
    "bilinear (clean)": (nn.Upsample(scale_factor=2, mode="bilinear"), (x4,)),
    "area": (Fn(lambda x: F.interpolate(x, size=(4, 4), mode="area")), (x4,)),
    "quantile": (Fn(lambda x: torch.quantile(x, 0.3, dim=-1)), (x3,)),
    "as_strided": (Fn(lambda x: x.as_strided((2, 3), (1, 2)) * 2), (x3,)),
    "nll_loss 3-D": (Fn(_nll), (x3,)),
    "nll_loss 2-D (clean)": (Fn(lambda x: F.nll_loss(x.log_softmax(1),
                                                     torch.zeros(2, dtype=torch.long))),
                             (torch.randn(2, 5),)),
    "max_unpool2d": (Fn(_unpool), (x4,)),
    "trapezoid dx": (Fn(lambda x: torch.trapezoid(x, dx=0.5)), (x3,)),
}


def _named(remaining: list[str]) -> set[str]:
    """The ONNX op types the report's 'remaining' lines name."""
    out: set[str] = set()
    for line in remaining:
        m = re.search(r"exports to ([\w, ]+)\)", line) or re.match(r"ONNX (\w+)", line)
        assert m is not None, line
        out |= {o.strip() for o in m.group(1).split(",")}
    return out


@pytest.mark.parametrize("tracer", ["symbolic_trace", "export"])
@pytest.mark.parametrize("case", list(CASES))
def test_report_names_what_the_file_holds(case: str, tracer: str, tmp_path: Path) -> None:
    model, inputs = CASES[case]
    model = model.eval()
    try:
        low = lower_quiet(model, inputs, tracer=tracer, on_forbidden="warn")
    except fxlower.LoweringError as e:  # symbolic tracing cannot take every spelling
        assert tracer == "symbolic_trace", e
        pytest.skip(f"symbolic_trace: {e}")
    report = fxlower.report_of(low)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export(low, inputs, tmp_path / "m.onnx")
    held = {k for k, v in check_file(tmp_path / "m.onnx").op_counts.items() if k in FAMILY and v}
    assert _named(report.remaining) == held, (report.remaining, held)
    assert (not report.remaining) == (not held)
