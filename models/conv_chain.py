"""The convolution chain of Stack Overflow question 58357815.

    y = conv2d(conv2d(x, k1, padding=2), k2, padding=4)
    k1: (100, 1, 3, 3), k2: (2, 100, 5, 5), no bias

written as two nn.Conv2d modules with nothing between them. No gather-family op; the two
"full" convolutions merge exactly into one 7x7 conv with padding 6 (a linear-chain merge,
see design.md), so this is the test case for merging.
"""

from __future__ import annotations

import torch
import torch.nn as nn

SIZES = {
    "small": dict(batch=1, side=28),
    "full": dict(batch=8, side=224),
}


class ConvChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 100, kernel_size=3, padding=2, bias=False)
        self.conv2 = nn.Conv2d(100, 2, kernel_size=5, padding=4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def build(size: str = "small") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ConvChain().eval()
        x = torch.randn(s["batch"], 1, s["side"], s["side"])
    return model, (x,)
