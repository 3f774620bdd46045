"""transformers GPT2Model from a small config (random weights, no download).

Wrapped so the call is `gpt2(input_ids, use_cache=False)` and the output is the last
hidden state: with a cache, the output holds a DynamicCache, which is not a pytree and
does not export.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers import GPT2Config, GPT2Model

SIZES = {
    "small": dict(config=dict(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                              bos_token_id=0, eos_token_id=0),
                  batch=2, seq=16),
    "full": dict(config=dict(), batch=1, seq=128),  # GPT-2 small (124M)
}


class GPT2NoCache(nn.Module):
    def __init__(self, gpt2: GPT2Model) -> None:
        super().__init__()
        self.gpt2 = gpt2

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt2(input_ids, use_cache=False).last_hidden_state


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = GPT2Config(use_cache=False, **s["config"])
        model = GPT2NoCache(GPT2Model(config)).eval()
        input_ids = torch.randint(0, config.vocab_size, (s["batch"], s["seq"]))
        input_ids[0, 0], input_ids[0, 1] = 0, config.vocab_size - 1
    return model, (input_ids,)
