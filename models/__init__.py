"""The fxlower model zoo: small factory modules for testing the lowering end to end.

Every entry is a file `models/<name>.py` with `build(size="small") -> (model, example_inputs)`:
the model in eval mode with seeded random weights (no downloads), example_inputs a tuple of
positional tensors. `ZOO` maps an entry's name to its spec ("models/<file>.py:build", the
form the CLI takes); `SMALL` lists the entries the test suite runs.

With the repository root on sys.path this directory imports as the package `models`:

    from models import ZOO, SMALL, load
    model, inputs = load("mae")
"""

from __future__ import annotations

import importlib
from typing import Any

ZOO: dict[str, str] = {
    # hand-written models around one gather pattern each
    "topk_attention": "models/topk_attention.py:build",
    "mae": "models/mae.py:build",
    "bert_embedding": "models/bert_embedding.py:build",
    # no gather at all: must lower and export unchanged
    "vgg": "models/vgg.py:build",
    "conv_chain": "models/conv_chain.py:build",
    # transformers models from small configs (random weights, never from_pretrained)
    "hf_bert": "models/hf_bert.py:build",
    "hf_distilbert": "models/hf_distilbert.py:build",
    "hf_gpt2": "models/hf_gpt2.py:build",
    "hf_vit": "models/hf_vit.py:build",
    "hf_vitmae": "models/hf_vitmae.py:build",
    "hf_resnet": "models/hf_resnet.py:build",
    "hf_convnext": "models/hf_convnext.py:build",
    "hf_mobilenetv2": "models/hf_mobilenetv2.py:build",
    # full-size configs (not run by the tests): BERT-base at seq 128, ViT-B/16 at 224
    "hf_bert_base": "models/hf_bert.py:build_full",
    "hf_vit_b16": "models/hf_vit.py:build_full",
}

# Full-size entries: minutes to lower and export, so only `fxlower demo --full` runs them.
FULL: list[str] = ["hf_bert_base", "hf_vit_b16"]

# The entries tests/test_zoo.py runs: everything else, at size="small".
SMALL: list[str] = [n for n in ZOO if n not in FULL]


def module_name(name: str) -> str:
    """The importable module of a zoo entry: 'mae' -> 'models.mae'."""
    spec = ZOO[name]
    file = spec.split(":", 1)[0]
    return "models." + file.rsplit("/", 1)[-1].removesuffix(".py")


def load(name: str, size: str | None = None) -> tuple[Any, tuple[Any, ...]]:
    """Build a zoo entry by name: (model, example_inputs).

    Calls the entry's factory as the CLI does (no arguments), or `build(size)` of the
    entry's file when `size` is given ("small" | "full").
    """
    spec = ZOO[name]
    func = spec.split(":", 1)[1] if ":" in spec else "build"
    mod = importlib.import_module(module_name(name))
    if size is None:
        return getattr(mod, func)()
    return mod.build(size)


def param_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ZOO", "SMALL", "FULL", "load", "module_name", "param_count"]
