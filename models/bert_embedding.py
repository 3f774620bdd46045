"""A BERT-style embedding block and CLS pooler, written out by hand.

word + position + token-type embeddings (position ids sliced from a registered
`arange` buffer, as BERT does), LayerNorm, then CLS pooling `hidden[:, 0]` through a
Linear + tanh pooler. Gather-family ops: three nn.Embedding lookups (one with a constant
index), one integer select.
"""

from __future__ import annotations

import torch
import torch.nn as nn

SIZES = {
    "small": dict(vocab=1000, hidden=64, max_pos=128, type_vocab=2, batch=2, seq=16),
    "full": dict(vocab=30522, hidden=768, max_pos=512, type_vocab=2, batch=1, seq=128),
}


class BertEmbeddingPooler(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_pos: int, type_vocab: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.register_buffer(
            "position_ids", torch.arange(max_pos).expand((1, -1)), persistent=False
        )
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor):
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        h = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        h = self.LayerNorm(h)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return h, pooled


def build(size: str = "small") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertEmbeddingPooler(s["vocab"], s["hidden"], s["max_pos"], s["type_vocab"]).eval()
        input_ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"]))
        input_ids[:, 0] = 0  # include padding_idx among the ids
        input_ids[0, 1] = s["vocab"] - 1  # and the last row, so fresh draws span the table
        token_type_ids = torch.zeros(s["batch"], s["seq"], dtype=torch.int64)
        token_type_ids[:, s["seq"] // 2 :] = 1
    return model, (input_ids, token_type_ids)
