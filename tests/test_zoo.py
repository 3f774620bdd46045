"""The model zoo end to end: every SMALL entry lowers, exports gather-free ONNX, and
onnxruntime agrees with the original (fxlower.export checks both itself).

Entries that fail because of a core bug are listed in XFAIL (strict: the mark flips to a
failure once the bug is fixed, so remove the entry then).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils import _pytree as pytree

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fxlower  # noqa: E402
import models  # noqa: E402  (the repository's models/ folder)
from fxlower.testing import assert_no_forbidden_ops  # noqa: E402

# Entries with no gather-family op anywhere: they must capture, lower and export unchanged.
GATHER_FREE = {"vgg", "conv_chain", "hf_resnet", "hf_convnext", "hf_mobilenetv2"}

# name -> short reason, for entries that currently fail because of a core bug.
XFAIL: dict[str, str] = {}


def _entries() -> list:
    return [
        pytest.param(n, id=n,
                     marks=[pytest.mark.xfail(reason=XFAIL[n], strict=True)] if n in XFAIL else [])
        for n in models.SMALL
    ]


def _needs(name: str) -> None:
    if name.startswith("hf_"):
        pytest.importorskip("transformers")


def _tensors(out: object) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def test_registry_is_consistent() -> None:
    assert models.SMALL, "the zoo is empty"
    assert set(models.SMALL) <= set(models.ZOO)
    assert set(models.FULL) <= set(models.ZOO)
    assert not set(models.SMALL) & set(models.FULL)
    for name, spec in models.ZOO.items():
        file, _, func = spec.partition(":")
        assert file.startswith("models/") and file.endswith(".py"), spec
        assert (ROOT / file).is_file(), spec
        assert func, spec
        if not name.startswith("hf_") or importlib.util.find_spec("transformers"):
            assert callable(getattr(importlib.import_module(models.module_name(name)), func))
    assert GATHER_FREE <= set(models.SMALL)
    assert set(XFAIL) <= set(models.SMALL)


@pytest.mark.parametrize("name", _entries())
def test_zoo_entry_builds_deterministically(name: str) -> None:
    _needs(name)
    model, inputs = models.load(name)
    assert isinstance(inputs, tuple) and inputs
    assert all(isinstance(t, torch.Tensor) for t in inputs)
    assert not model.training, "zoo models are built in eval mode"
    model2, inputs2 = models.load(name)
    assert all(torch.equal(a, b) for a, b in zip(inputs, inputs2, strict=True))
    sd, sd2 = model.state_dict(), model2.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        out = _tensors(model(*inputs))
    assert out
    assert all(t.isfinite().all() for t in out if t.is_floating_point())


def _snapshot(model: torch.nn.Module) -> tuple:
    """Everything lowering must leave alone, in comparable form."""
    state = tuple((k, v.dtype, tuple(v.shape), v.detach().double().sum().item(),
                   v.detach().double().square().sum().item()) for k, v in model.state_dict().items())
    objects = tuple((k, id(p), p.requires_grad) for k, p in model.named_parameters())
    flags = tuple((n, m.training) for n, m in model.named_modules())
    hooks = tuple((n, len(m._forward_hooks), len(m._forward_pre_hooks))
                  for n, m in model.named_modules())
    return state, objects, flags, hooks


@pytest.mark.parametrize("name", _entries())
def test_zoo_entry_exports_gather_free(name: str, tmp_path: Path) -> None:
    _needs(name)
    model, inputs = models.load(name)
    path = tmp_path / f"{name}.onnx"
    before = _snapshot(model)
    # lower + verify + ONNX export + forbidden-op check + onnxruntime comparison
    report = fxlower.export(model, inputs, path)
    # the user's model is never changed: parameters, buffers, training flags, hooks
    assert _snapshot(model) == before
    assert_no_forbidden_ops(path)
    assert report.onnx["forbidden"] == 0
    assert not report.remaining
    assert not report.ops_after, report.format()
    if name in GATHER_FREE:
        assert not report.ops_before, f"{name} is listed as gather-free:\n{report.format()}"
    else:
        assert report.ops_before, f"{name} should hold gather-family ops:\n{report.format()}"
        assert report.applied, report.format()
