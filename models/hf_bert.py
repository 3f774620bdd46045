"""transformers BertModel from a config (random weights, no download).

Positional inputs (input_ids, attention_mask, token_type_ids), the order of
BertModel.forward. Outputs the ModelOutput (last_hidden_state, pooler_output).
size="full" is BERT-base (12 layers, hidden 768, vocab 30522) at sequence length 128.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel

SIZES = {
    "small": dict(config=dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=128,
                              max_position_embeddings=128),
                  batch=2, seq=16),
    "full": dict(config=dict(), batch=1, seq=128),  # BertConfig() defaults are BERT-base
}


def build(size: str = "small"):
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = BertConfig(**s["config"])
        model = BertModel(config).eval()
        b, n = s["batch"], s["seq"]
        input_ids = torch.randint(0, config.vocab_size, (b, n))
        input_ids[0, 0], input_ids[0, 1] = 0, config.vocab_size - 1  # span the table
        attention_mask = torch.ones(b, n, dtype=torch.int64)
        attention_mask[-1, n - n // 4 :] = 0  # right padding on the last sequence
        attention_mask[0, 0] = 1
        token_type_ids = torch.zeros(b, n, dtype=torch.int64)
        token_type_ids[:, n // 2 :] = 1
    return model, (input_ids, attention_mask, token_type_ids)


def build_full():
    """The full-size config (a factory with no arguments, for the CLI and the demo)."""
    return build("full")
