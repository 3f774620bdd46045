"""Test helpers for users of fxlower: assert that an ONNX model holds no forbidden ops, and
compare tensors bit for bit.

Example, in a pytest test::

    from fxlower.testing import assert_no_forbidden_ops

    def test_export_is_gather_free(tmp_path):
        path = tmp_path / "model.onnx"
        torch.onnx.export(model, args, path, dynamo=True)
        assert_no_forbidden_ops(path)

``same(a, b)`` is the equality the exact rewrites promise: dtype, shape, NaN places, values
and the sign of zero.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from onnx import ModelProto

from fxlower.check import CheckResult, check_file, check_model

if TYPE_CHECKING:
    from fxlower.targets import Target

__all__ = ["assert_no_forbidden_ops", "same"]


def assert_no_forbidden_ops(
    model_or_path: ModelProto | str | os.PathLike[str],
    *,
    forbid: Iterable[str] | str | None = None,
    allow: Iterable[str] | str | None = None,
    target: str | Target | None = None,
) -> CheckResult:
    """Check a model (an ``onnx.ModelProto`` or the path of an ONNX file) and return the result.

    ``forbid``, ``allow`` and ``target`` are as in :func:`fxlower.check.check_model` (default:
    the ``generic`` target, which forbids the Gather and Scatter families;
    ``target="rknn2"`` checks against that profile, int64 tensors included where the target
    has none).  Raises ``AssertionError`` whose message is
    :meth:`CheckResult.format` when any node is a violation; a file that cannot be read raises
    :class:`fxlower.errors.OnnxCheckError` (an error, not a failed assertion).
    """
    __tracebackhide__ = True  # pytest: report the failure at the caller
    if isinstance(model_or_path, ModelProto):
        result = check_model(model_or_path, forbid=forbid, allow=allow, target=target)
    elif isinstance(model_or_path, (str, os.PathLike)):
        result = check_file(model_or_path, forbid=forbid, allow=allow, target=target)
    else:
        raise TypeError(
            "assert_no_forbidden_ops expects an onnx.ModelProto or a path, "
            f"got {type(model_or_path).__name__}"
        )
    if not result.ok:
        raise AssertionError(result.format())
    return result


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-level equality of values: dtype, shape, NaN places, values, the sign of zero."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.dtype.is_floating_point:
        return torch.equal(a, b)
    na, nb = torch.isnan(a), torch.isnan(b)
    if not torch.equal(na, nb):
        return False
    return torch.equal(a[~na], b[~nb]) and torch.equal(torch.signbit(a[~na]), torch.signbit(b[~nb]))
