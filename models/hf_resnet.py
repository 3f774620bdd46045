"""transformers ResNetModel (a CNN transformers ships) from a small config.

Basic blocks, four stages. No gather-family op is expected.
"""

from __future__ import annotations

import torch
from transformers import ResNetConfig, ResNetModel

SIZES = {
    "small": dict(config=dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128],
                              depths=[1, 1, 1, 1], layer_type="basic"),
                  batch=2, image=64),
    "full": dict(config=dict(), batch=1, image=224),  # ResNet-50
}


def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = ResNetConfig(**s["config"])
        model = ResNetModel(config)
        _randomise_bn(model)
        model.eval()
        pixel_values = torch.randn(s["batch"], config.num_channels, s["image"], s["image"])
    return model, (pixel_values,)
