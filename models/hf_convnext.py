"""transformers ConvNextModel (a CNN transformers ships) from a small config.

Depthwise 7x7 convs, LayerNorm, layer scale. No gather-family op is expected.
"""

from __future__ import annotations

import torch
from transformers import ConvNextConfig, ConvNextModel

SIZES = {
    "small": dict(config=dict(num_channels=3, patch_size=4, num_stages=4,
                              hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
                  batch=2, image=64),
    "full": dict(config=dict(), batch=1, image=224),  # ConvNeXt-T
}


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = ConvNextConfig(**s["config"])
        model = ConvNextModel(config).eval()
        pixel_values = torch.randn(s["batch"], config.num_channels, s["image"], s["image"])
    return model, (pixel_values,)
