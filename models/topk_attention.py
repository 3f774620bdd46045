"""Top-k attention on 5-D attention weights [b, c, d, h, w].

A 3-D conv produces attention logits and values; the weights are a softmax over `d`; the
top-k positions along `d` are kept with `torch.topk`, and both the weights and the values
are gathered with the top-k indices (`torch.gather(weights, 2, idx)`), then weighted and
summed over the k kept positions. The index varies along every dim, so this exercises the
elementwise gather path (mask over index shape x d).
"""

from __future__ import annotations

import torch
import torch.nn as nn

SIZES = {
    # b, in_channels, c (heads), d (candidates), h, w, k
    "small": dict(b=2, cin=3, c=4, d=16, h=8, w=8, k=4),
    "full": dict(b=2, cin=8, c=8, d=64, h=32, w=32, k=8),
}


class TopKAttention(nn.Module):
    def __init__(self, cin: int, c: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.logits = nn.Conv3d(cin, c, kernel_size=3, padding=1)
        self.values = nn.Conv3d(cin, c, kernel_size=3, padding=1)
        self.out = nn.Conv2d(c, c, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.logits(x).softmax(dim=2)  # [b, c, d, h, w]
        values = self.values(x)
        _, idx = torch.topk(weights, self.k, dim=2)  # [b, c, k, h, w]
        w_k = torch.gather(weights, 2, idx)
        v_k = torch.gather(values, 2, idx)
        y = (w_k * v_k).sum(dim=2)  # [b, c, h, w]
        return self.out(y)


def build(size: str = "small") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TopKAttention(s["cin"], s["c"], s["k"]).eval()
        x = torch.randn(s["b"], s["cin"], s["d"], s["h"], s["w"])
    return model, (x,)
