"""fxlower: lower gather-family ops and chains of linear layers in PyTorch models into ops
every edge chip has, verify the result, and export gather-free ONNX."""

from __future__ import annotations

from .api import export, lower, report_of
from .errors import FxlowerError, LoweringError, OnnxCheckError, VerificationError
from .onnx_lower import OnnxReport, lower_onnx
from .quantize import QuantizeSummary, quantize_static
from .report import Applied, Report, Skipped
from .targets import Target, get_target

__version__ = "0.1.0"

__all__ = [
    "lower", "export", "report_of", "lower_onnx", "OnnxReport", "quantize_static", "QuantizeSummary", "Report", "Applied", "Skipped", "Target", "get_target",
    "FxlowerError", "LoweringError", "VerificationError", "OnnxCheckError",
]
