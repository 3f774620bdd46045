"""A small VGG-style classifier: conv-BN-ReLU blocks, max-pooling, an MLP head.

No gather-family op at all: fxlower must capture, lower (nothing to apply) and export it
unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

SIZES = {
    # channels per block ("M" = max-pool), image side, classes, hidden width of the head
    "small": dict(cfg=[16, "M", 32, "M", 64, 64, "M"], image=32, classes=10, hidden=128, batch=2),
    "full": dict(cfg=[64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                      512, 512, 512, "M"], image=224, classes=1000, hidden=4096, batch=1),
}


class VGG(nn.Module):
    def __init__(self, cfg: list, image: int, classes: int, hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, side = 3, image
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                side //= 2
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1),
                           nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * side * side, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(size: str = "small") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = VGG(s["cfg"], s["image"], s["classes"], s["hidden"])
        # non-trivial BatchNorm statistics, so eval-mode BN is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)
        model.eval()
        x = torch.randn(s["batch"], 3, s["image"], s["image"])
    return model, (x,)
