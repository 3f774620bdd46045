"""Verification against the model: a deliberately broken rewrite is found by bisection,
named, rolled back and reported while the other rewrites stay; a capture that differs
from the model is not blamed on a rewrite."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from helpers import assert_same_outputs, lower_quiet
from strategies import randint as _i
from strategies import randn as _x

import fxlower


class _Broken:
    """A deliberately broken index rewrite (adds 1), for the culprit finding."""

    @staticmethod
    def passes():
        from fxlower.passes import PASSES
        from fxlower.passes.index_to_mask_matmul import IndexToMaskMatmul

        class Broken(IndexToMaskMatmul):
            def replace(self, plan, b):
                return (b.proxy(super().replace(plan, b)) + 1).node

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
