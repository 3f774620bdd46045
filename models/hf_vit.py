"""transformers ViTModel from a config (random weights, no download).

Outputs the ModelOutput (last_hidden_state, pooler_output); the pooler reads the CLS
token `hidden[:, 0]`. size="full" is ViT-B/16 at 224x224.
"""

from __future__ import annotations

import torch
from transformers import ViTConfig, ViTModel

SIZES = {
    "small": dict(config=dict(image_size=32, patch_size=8, num_channels=3, hidden_size=64,
                              num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=128),
                  batch=2),
    "full": dict(config=dict(), batch=1),  # ViTConfig() defaults are ViT-B/16, 224
}


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = ViTConfig(**s["config"])
        model = ViTModel(config).eval()
        pixel_values = torch.randn(s["batch"], config.num_channels, config.image_size,
                                   config.image_size)
    return model, (pixel_values,)


def build_full():
    """The full-size config (a factory with no arguments, for the CLI and the demo)."""
    return build("full")
