"""Issue 16's advice: when a rewrite adds more than 10% to the model's multiply-adds, the
report (and the CLI, as `hint:` lines) says so with numbers and names the cheaper option:
embedding="host" for a lookup of a stored table by the inputs, assume_finite=True where the
cost includes the non-finite code path. Both sides of each, and the full-size BERT and CLIP
text embeddings (slow)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
from helpers import lower_quiet

import fxlower
from fxlower.census import graph_macs


class Lookup(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 64)
        self.fc = nn.Linear(64, 64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids))


IDS = torch.randint(0, 100, (2, 16))


def test_a_costly_embedding_gets_the_host_hint_with_its_numbers() -> None:
    low = lower_quiet(Lookup(30522).eval(), (IDS,))
    report = fxlower.report_of(low)
    assert report.model_macs == 2 * 16 * 64 * 64  # the Linear's
    (hint,) = report.advice
    assert hint.startswith("nn.Embedding 'emb': index_to_mask_matmul adds 62,509,056 "
                           "multiply-adds per call (47691% of the model's 131,072)")
    assert 'embedding="host"' in hint and "assume_finite" not in hint  # a finite table
    assert f"hint: {hint}" in report.format()


def test_no_hint_when_the_rewrite_is_cheap_or_the_lookup_is_on_the_host() -> None:
    low = lower_quiet(Lookup(4).eval(), (IDS % 4,))  # 8 KMACs of 131 K: 6%, below 10%
    assert fxlower.report_of(low).advice == []
    low = lower_quiet(Lookup(30522).eval(), (IDS,), embedding="host")
    assert fxlower.report_of(low).advice == []


def test_a_costly_gather_of_activations_gets_the_assume_finite_hint() -> None:
    class Pick(nn.Module):
        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            return x[ids]  # rows of an activation: not a stored table, no host option

    x, ids = torch.randn(512, 64), torch.randint(0, 512, (32,))
    report = fxlower.report_of(lower_quiet(Pick(), (x, ids)))
    (hint,) = report.advice
    assert "no products of its own" in hint and "assume_finite=True drops the non-finite" in hint
    assert 'embedding="host"' not in hint
    report = fxlower.report_of(lower_quiet(Pick(), (x, ids), assume_finite=True))
    assert [("assume_finite" in h, "no cheaper exact formulation" in h) for h in report.advice] == [
        (False, True)]


def test_graph_macs_counts_linear_conv_matmul_and_attention() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, groups=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.fc(self.conv(x).mean((2, 3)))
            a = torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return y, a @ q.transpose(-2, -1)

    x, q = torch.randn(1, 3, 5, 5), torch.randn(2, 3, 6, 4)
    for tracer in ("symbolic_trace", "export"):
        low = lower_quiet(Net(), (x, q), tracer=tracer)
        conv, fc = 8 * 25 * 3 * 9, 4 * 8
        attn = 2 * (2 * 3 * 6 * 4) * 6
        matmul = 2 * 3 * 6 * 6 * 4
        assert fxlower.report_of(low).model_macs == conv + fc + attn + matmul, tracer
        assert graph_macs(low) == conv + fc + attn + matmul


@pytest.mark.slow
def test_full_size_bert_and_clip_embeddings_get_the_hint() -> None:
    import transformers as tf

    from models import load

    bert, inputs = load("hf_bert", "full")  # BERT-base at sequence length 128
    report = fxlower.report_of(lower_quiet(bert, inputs))
    (words,) = report.advice  # the word embedding; position/type tables are cheap
    assert f"adds {128 * 30522 * 768:,} multiply-adds" in words and 'embedding="host"' in words
    share = int(re.search(r"\((\d+)% of the model's", words).group(1))  # type: ignore[union-attr]
    assert share > 10
    torch.manual_seed(0)
    clip = tf.CLIPTextModel(tf.CLIPTextConfig()).eval()  # full size: vocab 49408, width 512
    ids = torch.randint(0, 49408, (1, 77))
    report = fxlower.report_of(lower_quiet(clip, (ids,)))
    (tokens,) = report.advice
    assert f"adds {77 * 49408 * 512:,} multiply-adds" in tokens and 'embedding="host"' in tokens
