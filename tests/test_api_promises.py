"""The API's promises, whatever the passes: without example inputs only the shape-free
rewrites apply, the user's model is never changed, the output pytree is kept, and a model
neither tracer can capture gets an error naming both."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, lower_quiet
from strategies import randint as _i
from strategies import randn as _x
from test_gather_forms import Embed, Gather

import fxlower

TRACERS = ["symbolic_trace", "export"]


def test_without_example_inputs_only_shape_free_rewrites_apply() -> None:
    class Sel(nn.Module):
        def forward(self, x):
            return x[:, 0] + x[:, -1]

    with pytest.warns(UserWarning, match="verification was skipped"):
        lowered = fxlower.lower(Sel())
    assert len(applied(lowered, "select_to_slice")) == 2
    x = _x(3, 4)
    assert_same_outputs(Sel()(x), lowered(x))

    with pytest.raises(fxlower.LoweringError, match="shapes unknown"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fxlower.lower(Gather(1))


def test_user_model_is_never_changed() -> None:
    model = Embed()
    model.train()

    def hook(m: nn.Module, i: object, o: object) -> None:
        pass

    model.register_forward_hook(hook)
    before = copy.deepcopy(model.state_dict())
    ids = {k: id(v) for k, v in model.named_parameters()}
    lowered = lower_quiet(model, (_i(11, 2, 7),))
    assert model.training is True
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert ids == {k: id(v) for k, v in model.named_parameters()}
    assert list(model._forward_hooks.values()) == [hook]  # (hooks firing: test_trust.py)
    # the lowered module owns its own parameters
    for p in lowered.parameters():
        assert all(p is not q for q in model.parameters())


def test_output_pytree_is_kept() -> None:
    class Dict(nn.Module):
        def forward(self, x, i):
            return {"sel": x[:, 0], "rows": (x[i], [x.gather(1, i.unsqueeze(1))])}

    x, i = _x(4, 3), _i(3, 2)
    for tracer in TRACERS:
        lowered = lower_quiet(Dict(), (x, i), tracer=tracer)
        out = lowered(x, i)
        assert set(out) == {"sel", "rows"}
        assert isinstance(out["rows"], tuple) and isinstance(out["rows"][1], list)
        assert_same_outputs(Dict()(x, i), out)


def test_untraceable_model_names_both_tracers() -> None:
    class Bad(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow defeats both tracers
                return x[:, 0]
            return x[:, 1]

    with pytest.raises(fxlower.LoweringError, match="symbolic_trace.*torch.export"):
        fxlower.lower(Bad(), (_x(2, 3),))
