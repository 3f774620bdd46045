"""Issue 6's promise on zoo models: for every profile, `fxlower.export(..., target=T)`
either gives a file that `fxlower check --target T` passes node by node, or fails with an
error that names exactly what the target is missing (ops, or int64 tensors)."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest

import fxlower
from fxlower.check import check_file
from fxlower.targets import load_profiles

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models import load  # noqa: E402

MODELS = ["mae", "bert_embedding", "topk_attention"]
PROFILES = sorted(load_profiles())


@pytest.mark.parametrize("target", PROFILES)
@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_on_target_passes_or_names_what_is_missing(name: str, target: str,
                                                             tmp_path: Path) -> None:
    model, inputs = load(name)
    path = tmp_path / f"{name}.{target}.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fxlower.export(model, inputs, path, target=target)
    except fxlower.LoweringError as e:
        msg = str(e)
        assert f"'{target}'" in msg or f"target {target}" in msg or str(path) in msg, msg
        # the message names concrete missing things: op types or int64 tensors
        named = re.findall(r"\b(?:[A-Z][A-Za-z]+|int64)\b", msg)
        assert named, msg
        return
    result = check_file(path, target=target)
    assert result.ok, result.format()


def test_generic_target_holds_the_whole_small_zoo_gather_and_scatter_free() -> None:
    """The default profile: the zoo tests export every small model; here, that the
    default *is* generic and forbids both families."""
    t = fxlower.get_target(None)
    assert t.name == "generic"
    for op in ("Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements"):
        assert not t.allows(op)
