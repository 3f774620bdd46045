"""Decoder-only language models of transformers from small configs.

Called as model(input_ids, attention_mask) with use_cache=False in the config (GPT-2,
GPT-Neo, Falcon and BLOOM take past_key_values second, so they are wrapped in ByKeyword,
which passes both by keyword), so the output is a ModelOutput of plain tensors (a DynamicCache is not a pytree and does not
export). Batch 2, length 16, the last sequence right-padded; 2 layers, width 64,
vocabulary 1000. These are the base models (last_hidden_state), without the LM head.
Attention is each model's default implementation (SDPA where supported).
"""

from __future__ import annotations

import transformers as tf

try:
    from ._common import ByKeyword, hf_model, tokens
except ImportError:  # loaded as a file, by the CLI's models/corpus/decoder.py:<factory>
    from _common import ByKeyword, hf_model, tokens  # type: ignore[no-redef]

# Llama-style shapes: grouped-query attention (4 query heads, 2 key/value heads), rotary.
LLAMA = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
             use_cache=False)


def gpt2(size: str = "small"):
    cfg = dict(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=128,
               bos_token_id=0, eos_token_id=0, use_cache=False)
    return hf_model(tf.GPT2Config, tf.GPT2Model, cfg, tokens(), size, wrap=ByKeyword)


def gpt_neo(size: str = "small"):
    """GPT-Neo: one global and one local (window 8) attention layer."""
    cfg = dict(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
               intermediate_size=128, attention_types=[[["global", "local"], 1]],
               window_size=8, max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
               use_cache=False)
    return hf_model(tf.GPTNeoConfig, tf.GPTNeoModel, cfg, tokens(), size, wrap=ByKeyword)


def opt(size: str = "small"):
    """OPT: learned positions offset by 2, read at the cumulative sum of the mask."""
    cfg = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
               num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=64,
               use_cache=False)
    return hf_model(tf.OPTConfig, tf.OPTModel, cfg, tokens(), size)


def llama(size: str = "small"):
    return hf_model(tf.LlamaConfig, tf.LlamaModel, LLAMA, tokens(), size)


def mistral(size: str = "small"):
    """Mistral: Llama layout with sliding-window (8) attention."""
    return hf_model(tf.MistralConfig, tf.MistralModel, dict(LLAMA, sliding_window=8),
                    tokens(), size)


def qwen2(size: str = "small"):
    return hf_model(tf.Qwen2Config, tf.Qwen2Model, LLAMA, tokens(), size)


def gemma(size: str = "small"):
    """Gemma: head_dim 16, embeddings scaled by sqrt(width), GELU-tanh gated MLP."""
    return hf_model(tf.GemmaConfig, tf.GemmaModel, dict(LLAMA, head_dim=16), tokens(), size)


def phi(size: str = "small"):
    """Phi: parallel attention and MLP, rotary on half of each head."""
    cfg = dict(LLAMA, num_key_value_heads=4, partial_rotary_factor=0.5)
    return hf_model(tf.PhiConfig, tf.PhiModel, cfg, tokens(), size)


def falcon(size: str = "small"):
    """Falcon-7B layout: multi-query attention, parallel attention and MLP, rotary."""
    cfg = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=128, bos_token_id=0, eos_token_id=0, use_cache=False)
    return hf_model(tf.FalconConfig, tf.FalconModel, cfg, tokens(), size, wrap=ByKeyword)


def bloom(size: str = "small"):
    """BLOOM: ALiBi position biases from the mask's cumulative sum, no position embeddings."""
    cfg = dict(vocab_size=1000, hidden_size=64, n_layer=2, n_head=4, bos_token_id=0,
               eos_token_id=0, use_cache=False)
    return hf_model(tf.BloomConfig, tf.BloomModel, cfg, tokens(), size, wrap=ByKeyword)
