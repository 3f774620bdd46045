"""transformers ViTMAEModel (the MAE encoder) from a small config, noise as an input.

ViTMAEModel.forward(pixel_values, noise) takes the masking noise as its second
positional argument, so runs repeat and verification can compare. Outputs the
ModelOutput (last_hidden_state, mask, ids_restore).
"""

from __future__ import annotations

import torch
from transformers import ViTMAEConfig, ViTMAEModel

SIZES = {
    "small": dict(config=dict(image_size=32, patch_size=4, num_channels=3, hidden_size=64,
                              num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=128, mask_ratio=0.75),
                  batch=2),
    "full": dict(config=dict(), batch=1),  # ViT-MAE base, 224, patch 16
}


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = ViTMAEConfig(**s["config"])
        model = ViTMAEModel(config).eval()
        pixel_values = torch.randn(s["batch"], config.num_channels, config.image_size,
                                   config.image_size)
        num_patches = (config.image_size // config.patch_size) ** 2
        noise = torch.rand(s["batch"], num_patches)
    return model, (pixel_values, noise)
