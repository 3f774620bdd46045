"""Speech encoders of transformers from small configs.

The wav2vec2 family takes (input_values, attention_mask): 1600 samples through a 2-layer
conv feature extractor (stride 10, 160 frames); the last clip is zero-padded over its last
quarter, so the padded frames are zeroed by index (an index_put). Whisper's encoder takes
(input_features,): 16 mel bins by 32 frames. Outputs are the models' ModelOutputs.
"""

from __future__ import annotations

import transformers as tf
from transformers.models.whisper.modeling_whisper import WhisperEncoder

try:
    from ._common import hf_model, mel, waveform
except ImportError:  # loaded as a file, by the CLI's models/corpus/speech.py:<factory>
    from _common import hf_model, mel, waveform  # type: ignore[no-redef]

# The shapes the wav2vec2 family shares: 2 conv layers, 2 transformer layers of width 32.
W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
           conv_dim=[16, 16], conv_stride=[5, 2], conv_kernel=[10, 3],
           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def wav2vec2(size: str = "small"):
    return hf_model(tf.Wav2Vec2Config, tf.Wav2Vec2Model, W2V, waveform(), size)


def hubert(size: str = "small"):
    return hf_model(tf.HubertConfig, tf.HubertModel, W2V, waveform(), size)


def data2vec_audio(size: str = "small"):
    """Data2VecAudio: layer-normed conv features, a stack of conv position embeddings."""
    cfg = dict(W2V, num_conv_pos_embeddings=5, num_conv_pos_embedding_groups=2,
               conv_pos_kernel_size=5, num_conv_pos_embedding_layers=2)
    return hf_model(tf.Data2VecAudioConfig, tf.Data2VecAudioModel, cfg, waveform(), size)


def whisper_encoder(size: str = "small"):
    """WhisperEncoder alone: two convs (the second of stride 2) and sinusoidal positions."""
    cfg = dict(vocab_size=100, num_mel_bins=16, d_model=32, encoder_layers=2,
               encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
               decoder_attention_heads=2, decoder_ffn_dim=64, max_source_positions=16,
               max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
               decoder_start_token_id=3)
    return hf_model(tf.WhisperConfig, WhisperEncoder, cfg, mel, size)
