"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils import _pytree as pytree

import fxlower
from fxlower.census import census
from fxlower.check import DEFAULT_FORBIDDEN
from fxlower.testing import same  # bit-level equality: one definition, shared with the fuzzer


def assert_same_outputs(x: Any, y: Any) -> None:
    lx, ly = pytree.tree_leaves(x), pytree.tree_leaves(y)
    assert len(lx) == len(ly)
    for i, (a, b) in enumerate(zip(lx, ly, strict=True)):
        assert same(a, b), f"output leaf {i} differs:\n{a}\n{b}"


def lower_quiet(model: torch.nn.Module, inputs: Any, **kw: Any) -> torch.fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxlower.lower(model, inputs, **kw)


def applied(lowered: torch.fx.GraphModule, pass_name: str | None = None) -> list[fxlower.Applied]:
    rows = fxlower.report_of(lowered).applied
    return [a for a in rows if pass_name is None or a.pass_name == pass_name]


def skipped(lowered: torch.fx.GraphModule) -> list[fxlower.Skipped]:
    return fxlower.report_of(lowered).skipped


def gather_ops_left(lowered: torch.fx.GraphModule) -> dict[str, int]:
    return census(lowered, DEFAULT_FORBIDDEN)


def code_lookalikes(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A copy of float x with the finite values the kernels' code schemes use as codes
    sprinkled in (1.0, +-max, +0.0, tiny negatives whose reciprocal is -inf, the smallest
    subnormals): a real 1.0 or max must come out as itself, not as the NaN or inf it codes."""
    if not x.dtype.is_floating_point or not x.numel():
        return x
    x = x.clone()
    fi = torch.finfo(x.dtype)
    g = torch.Generator().manual_seed(seed + 1)
    flat = x.view(-1)
    tiny = fi.smallest_normal / 4 if x.dtype != torch.bfloat16 else fi.smallest_normal
    for v in (1.0, fi.max, -fi.max, 0.0, -tiny, tiny, -fi.smallest_normal):
        pos = torch.randint(0, flat.numel(), (max(1, flat.numel() // 16),), generator=g)
        flat[pos] = v
    return x


def nonfinite(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A copy of float x with NaN, +inf, -inf and -0.0 sprinkled in."""
    x = x.clone()
    g = torch.Generator().manual_seed(seed)
    flat = x.view(-1)
    for v in (float("nan"), float("inf"), float("-inf"), -0.0):
        pos = torch.randint(0, flat.numel(), (max(1, flat.numel() // 8),), generator=g)
        flat[pos] = v
    return x


def load_tool(name: str) -> ModuleType:
    """A development tool of tools/ (no package) as a module, for the tests that check the
    code a `make` target runs: `load_tool("target_table")` is tools/target_table.py."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
