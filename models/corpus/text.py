"""Text encoders (and one encoder-decoder) of transformers from small configs.

Inputs are positional in the order of each model's forward: (input_ids, attention_mask)
and token_type_ids where the architecture has segment embeddings; batch 2, length 16, the
last sequence right-padded. Outputs are the models' ModelOutputs. Attention is each
model's default implementation (SDPA where the architecture supports it).
"""

from __future__ import annotations

import transformers as tf

try:
    from ._common import hf_model, tokens
except ImportError:  # loaded as a file, by the CLI's models/corpus/text.py:<factory>
    from _common import hf_model, tokens  # type: ignore[no-redef]

# The shapes every encoder here shares: 2 layers, width 64, 4 heads, vocabulary 1000.
ENC = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
           intermediate_size=128, max_position_embeddings=128)


def bert(size: str = "small"):
    return hf_model(tf.BertConfig, tf.BertModel, ENC, tokens(types=True), size)


def roberta(size: str = "small"):
    return hf_model(tf.RobertaConfig, tf.RobertaModel, ENC, tokens(), size)


def xlm_roberta(size: str = "small"):
    return hf_model(tf.XLMRobertaConfig, tf.XLMRobertaModel, ENC, tokens(), size)


def albert(size: str = "small"):
    """Factorised embeddings (32 wide) and one layer's weights shared by both layers."""
    return hf_model(tf.AlbertConfig, tf.AlbertModel, dict(ENC, embedding_size=32),
                    tokens(types=True), size)


def electra(size: str = "small"):
    return hf_model(tf.ElectraConfig, tf.ElectraModel, dict(ENC, embedding_size=32),
                    tokens(types=True), size)


def distilbert(size: str = "small"):
    cfg = dict(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
               max_position_embeddings=128)
    return hf_model(tf.DistilBertConfig, tf.DistilBertModel, cfg, tokens(), size)


def deberta_v2(size: str = "small"):
    """The DeBERTa-v3 layout: disentangled relative attention (c2p and p2c, read with
    torch.gather over log-bucketed relative positions), no absolute position input."""
    cfg = dict(ENC, relative_attention=True, position_buckets=32, max_relative_positions=-1,
               pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True,
               position_biased_input=False, type_vocab_size=0)
    return hf_model(tf.DebertaV2Config, tf.DebertaV2Model, cfg, tokens(), size)


def mpnet(size: str = "small"):
    """Relative position buckets (32) added to every layer's attention scores."""
    return hf_model(tf.MPNetConfig, tf.MPNetModel, ENC, tokens(), size)


def t5_encoder(size: str = "small"):
    """T5EncoderModel: bucketed relative attention bias, RMS norm, no absolute positions.

    The plain ONNX export of this config fails (see ORIGINAL_EXPORT_FAILS in __init__.py);
    with num_heads=1 it exports."""
    cfg = dict(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
               relative_attention_num_buckets=32, relative_attention_max_distance=128)
    return hf_model(tf.T5Config, tf.T5EncoderModel, cfg, tokens(), size)


def bart(size: str = "small"):
    """BartModel, encoder and decoder: the decoder reads input_ids shifted right."""
    cfg = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2,
               encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
               decoder_ffn_dim=128, max_position_embeddings=128, use_cache=False)
    return hf_model(tf.BartConfig, tf.BartModel, cfg, tokens(), size)


def clip_text(size: str = "small"):
    """CLIPTextModel: causal mask, pooled output read at each sequence's end token."""
    cfg = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=32, pad_token_id=1,
               bos_token_id=998, eos_token_id=999)
    return hf_model(tf.CLIPTextConfig, tf.CLIPTextModel, cfg, tokens(), size)
