"""The exceptions fxlower raises. Each names its cause in a sentence a user can act on."""

from __future__ import annotations


class FxlowerError(Exception):
    """Base class of every error fxlower raises on purpose."""


class LoweringError(FxlowerError):
    """The model could not be captured, or a forbidden op remains after lowering."""


class VerificationError(FxlowerError):
    """The lowered model's outputs differ from the original model's."""


class OnnxCheckError(FxlowerError):
    """An ONNX file could not be read or is not a valid ONNX model."""
