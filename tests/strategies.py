"""What the per-pass test files (tests/passes/) and the cross-pass ones share: deterministic
example tensors, the dtypes, settings and draws of the property tests, and the lowering
helpers those tests call. Imported as `from strategies import ...` (tests/conftest.py puts
tests/ on sys.path)."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, nonfinite, skipped
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import fxlower
from fxlower.census import census
from fxlower.kernels import scatter as scatter_ops

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.uint8, torch.bool]
# the property tests of the gather and scatter passes: random shapes, dims, dtypes and indices
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCATTER_GATHER = frozenset({"ScatterND", "ScatterElements", "Scatter", "Gather",
                            "GatherElements", "GatherND"})


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def randint(high: int, *shape: int, seed: int = 1, low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed))


def source(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A tensor of any dtype: int64 far beyond 2**24, floats with NaN/inf/-0.0 sprinkled in."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype == torch.int64:
        return torch.randint(-(2**62), 2**62, shape, generator=g)
    if not dtype.is_floating_point:
        return torch.randint(0, 120, shape, generator=g).to(dtype)
    x = torch.randn(shape, generator=g) * 100
    return (nonfinite(x, seed) if x.numel() else x).to(dtype)


def draw_shape(data: st.DataObject, rank: int, lo: int = 1, hi: int = 5) -> tuple[int, ...]:
    return tuple(data.draw(st.lists(st.integers(lo, hi), min_size=rank, max_size=rank)))


def lower_unverified(model: nn.Module, inputs: tuple, tracer: str) -> torch.fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxlower.lower(model, inputs, verify=False, tracer=tracer)


def lower_and_compare(model: nn.Module, runs: list[tuple], tracer: str, pass_name: str) -> None:
    """Lowered (unverified) on runs[0]: pass_name applied, no scatter/gather-family op left,
    and every run bit-exact against the model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(model, runs[0], verify=False, tracer=tracer)
    assert applied(lowered, pass_name), fxlower.report_of(lowered).skipped
    assert census(lowered, SCATTER_GATHER) == {}
    assert scatter_ops.remaining(lowered) == []
    for args in runs:
        assert_same_outputs(model(*args), lowered(*args))


def scatter_left(lowered: torch.fx.GraphModule) -> list[str]:
    """Scatter/gather-family nodes left: the census's view and the scatter view."""
    return [*census(lowered, SCATTER_GATHER), *scatter_ops.remaining(lowered)]


def skip_reasons(model: nn.Module, inputs: tuple, tracer: str) -> list[str]:
    """The reasons of every refusal, lowering unverified with on_forbidden="warn"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = fxlower.lower(model, inputs, tracer=tracer, on_forbidden="warn", verify=False)
    return [s.reason for s in skipped(lowered)]
