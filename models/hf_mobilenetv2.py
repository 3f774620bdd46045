"""transformers MobileNetV2Model (a CNN transformers ships) from a small config.

Inverted residuals with depthwise convs and ReLU6. No gather-family op is expected.
"""

from __future__ import annotations

import torch
from transformers import MobileNetV2Config, MobileNetV2Model

SIZES = {
    "small": dict(config=dict(num_channels=3, image_size=64, depth_multiplier=0.25),
                  batch=2),
    "full": dict(config=dict(), batch=1),  # MobileNetV2 1.0, 224
}


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = MobileNetV2Config(**s["config"])
        model = MobileNetV2Model(config)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.eval()
        pixel_values = torch.randn(s["batch"], config.num_channels, config.image_size,
                                   config.image_size)
    return model, (pixel_values,)
