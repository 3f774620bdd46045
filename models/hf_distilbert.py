"""transformers DistilBertModel from a small config (random weights, no download).

Positional inputs (input_ids, attention_mask), the order of DistilBertModel.forward.
"""

from __future__ import annotations

import torch
from transformers import DistilBertConfig, DistilBertModel

SIZES = {
    "small": dict(config=dict(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                              max_position_embeddings=128),
                  batch=2, seq=16),
    "full": dict(config=dict(), batch=1, seq=128),  # distilbert-base-uncased shapes
}


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = DistilBertConfig(**s["config"])
        model = DistilBertModel(config).eval()
        b, n = s["batch"], s["seq"]
        input_ids = torch.randint(0, config.vocab_size, (b, n))
        input_ids[0, 0], input_ids[0, 1] = 0, config.vocab_size - 1
        attention_mask = torch.ones(b, n, dtype=torch.int64)
        attention_mask[-1, n - n // 4 :] = 0
    return model, (input_ids, attention_mask)
