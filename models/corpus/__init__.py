"""The corpus: real transformers architectures from small configs (random weights, no
downloads), for measuring the lowering across many models at once.

One file per family, one factory per architecture: `models/corpus/<family>.py:<name>`
with `<name>(size="small") -> (model, example_inputs)`, the model in eval mode with seeded
random weights and example_inputs a tuple of positional tensors (see _common.py). Every
entry's original model exports with `torch.onnx.export(model, inputs, dynamo=True)`, but
those in `ORIGINAL_EXPORT_FAILS`, kept because the architectures matter.
`CORPUS` maps an entry's name to its spec (the form the CLI takes); `FAST` lists the few
entries that lower and export fastest, for the test suite. `make corpus` (tools/corpus.py) runs
the whole corpus through the exporter and the lowering.

With the repository root on sys.path:

    from models.corpus import CORPUS, FAST, input_draws, load
    model, inputs = load("swin")
    more = input_draws(model)   # valid inputs to verify on, made like `inputs`
"""

from __future__ import annotations

import importlib
from typing import Any

from ._common import input_draws

_FAMILIES: dict[str, list[str]] = {
    "text": ["bert", "roberta", "xlm_roberta", "albert", "electra", "distilbert",
             "deberta_v2", "mpnet", "t5_encoder", "bart", "clip_text"],
    "vision": ["vit", "deit", "beit", "dinov2", "clip_vision", "swin", "mobilevit", "levit",
               "segformer", "poolformer", "convnext", "resnet", "mobilenet_v2",
               "efficientnet"],
    "speech": ["wav2vec2", "hubert", "data2vec_audio", "whisper_encoder"],
    "decoder": ["gpt2", "gpt_neo", "opt", "llama", "mistral", "qwen2", "gemma", "phi",
                "falcon", "bloom"],
}

CORPUS: dict[str, str] = {
    name: f"models/corpus/{family}.py:{name}"
    for family, names in _FAMILIES.items() for name in names
}

# The entries that lower and export fastest (measured with tools/corpus.py).
FAST: list[str] = ["gemma", "opt", "clip_text", "distilbert", "vit"]

# Entries whose original model does not export to ONNX (torch 2.13, transformers 5.24);
# the torch.export'ed module fails the same way. SDPA with an attention mask that requires
# grad (a position bias computed from a parameter) and more than one head: the exporter's
# decomposition lays SDPA's output out differently from the export trace, where
# `.contiguous()` after the transpose was a no-op, so a later `view` fails. They export
# under torch.no_grad(), with requires_grad_(False), with one head, or with eager attention.
_VIEW = "Cannot view a tensor ... as a tensor with shape ... (SDPA output layout)"
ORIGINAL_EXPORT_FAILS: dict[str, str] = {"beit": _VIEW, "swin": _VIEW, "t5_encoder": _VIEW}


def module_name(name: str) -> str:
    """The importable module of a corpus entry: 'swin' -> 'models.corpus.vision'."""
    file = CORPUS[name].split(":", 1)[0]
    return "models.corpus." + file.rsplit("/", 1)[-1].removesuffix(".py")


def load(name: str, size: str = "small") -> tuple[Any, tuple[Any, ...]]:
    """Build a corpus entry by name: (model, example_inputs)."""
    func = CORPUS[name].split(":", 1)[1]
    return getattr(importlib.import_module(module_name(name)), func)(size)


__all__ = ["CORPUS", "FAST", "ORIGINAL_EXPORT_FAILS", "input_draws", "load", "module_name"]
