"""Vision models of transformers from small configs: ViT-family transformers, windowed and
hierarchical transformers, and CNNs.

Input is (pixel_values,) of batch 2; outputs are the models' ModelOutputs. Attention is
each model's default implementation (SDPA where the architecture supports it). Models
with BatchNorm get random running statistics so the norms are not the identity.
"""

from __future__ import annotations

import transformers as tf

try:
    from ._common import hf_model, pixels
except ImportError:  # loaded as a file, by the CLI's models/corpus/vision.py:<factory>
    from _common import hf_model, pixels  # type: ignore[no-redef]

# A ViT-style encoder: 32x32 images, 8x8 patches (16 tokens + CLS), 2 layers, width 64.
VIT = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=128)


def vit(size: str = "small"):
    return hf_model(tf.ViTConfig, tf.ViTModel, VIT, pixels(), size)


def deit(size: str = "small"):
    """DeiT: CLS and distillation tokens."""
    return hf_model(tf.DeiTConfig, tf.DeiTModel, VIT, pixels(), size)


def beit(size: str = "small"):
    """BEiT as its checkpoints configure it: a relative position bias table per layer, read
    through a stored index (window 4x4 + CLS); mean pooling.

    The plain ONNX export of this config fails (see ORIGINAL_EXPORT_FAILS in __init__.py);
    without the relative bias (BeitConfig's defaults) or with 1 head it exports."""
    cfg = dict(VIT, use_relative_position_bias=True)
    return hf_model(tf.BeitConfig, tf.BeitModel, cfg, pixels(), size)


def dinov2(size: str = "small"):
    cfg = {k: v for k, v in VIT.items() if k != "intermediate_size"}
    return hf_model(tf.Dinov2Config, tf.Dinov2Model, dict(cfg, mlp_ratio=2), pixels(), size)


def clip_vision(size: str = "small"):
    return hf_model(tf.CLIPVisionConfig, tf.CLIPVisionModel, VIT, pixels(), size)


def swin(size: str = "small"):
    """Swin: 2x2 patches (16x16 tokens), 4x4 windows, shifted in every second block, a
    relative position bias table read through a stored index; patch merging to 8x8.

    The plain ONNX export of this config fails (see ORIGINAL_EXPORT_FAILS in __init__.py);
    with num_heads=[1, 1] it exports. Its pooler (AdaptiveAvgPool1d) is decomposed by the
    exporter into an as_strided that becomes an ONNX Gather."""
    cfg = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
               window_size=4, mlp_ratio=2.0)
    return hf_model(tf.SwinConfig, tf.SwinModel, cfg, pixels(), size)


def mobilevit(size: str = "small"):
    """MobileViT: MobileNetV2 blocks and transformer blocks over 2x2 unfolded patches
    (eager attention: the architecture has no SDPA path)."""
    cfg = dict(image_size=64, patch_size=2, hidden_sizes=[16, 24, 32],
               neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 64], num_attention_heads=2,
               mlp_ratio=2.0)
    return hf_model(tf.MobileViTConfig, tf.MobileViTModel, cfg, pixels(), size,
                    batchnorm=True)


def levit(size: str = "small"):
    """LeViT: conv stem (/16), attention biases read through a stored index, two
    attention subsampling stages (64x64 image: 4x4 -> 2x2 -> 1x1 tokens)."""
    cfg = dict(image_size=64, hidden_sizes=[32, 64, 96], num_attention_heads=[2, 4, 6],
               depths=[1, 1, 1], key_dim=[8, 8, 8])
    return hf_model(tf.LevitConfig, tf.LevitModel, cfg, pixels(), size, batchnorm=True)


def segformer(size: str = "small"):
    """SegFormer with its all-MLP decode head (4 classes, logits at 1/4 resolution)."""
    cfg = dict(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
               num_attention_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2],
               decoder_hidden_size=32, num_labels=4)
    return hf_model(tf.SegformerConfig, tf.SegformerForSemanticSegmentation, cfg,
                    pixels(64), size, batchnorm=True)


def poolformer(size: str = "small"):
    cfg = dict(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], mlp_ratio=2.0)
    return hf_model(tf.PoolFormerConfig, tf.PoolFormerModel, cfg, pixels(64), size)


def convnext(size: str = "small"):
    cfg = dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])
    return hf_model(tf.ConvNextConfig, tf.ConvNextModel, cfg, pixels(64), size)


def resnet(size: str = "small"):
    cfg = dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
               layer_type="basic")
    return hf_model(tf.ResNetConfig, tf.ResNetModel, cfg, pixels(64), size, batchnorm=True)


def mobilenet_v2(size: str = "small"):
    cfg = dict(image_size=64, depth_multiplier=0.25)
    return hf_model(tf.MobileNetV2Config, tf.MobileNetV2Model, cfg, pixels(), size,
                    batchnorm=True)


def efficientnet(size: str = "small"):
    """EfficientNet at width 0.25 and depth 0.25 (one block per stage), 64x64 input."""
    cfg = dict(image_size=64, width_coefficient=0.25, depth_coefficient=0.25,
               hidden_dim=320)  # hidden_dim must be the top conv's width, 1280 * 0.25
    return hf_model(tf.EfficientNetConfig, tf.EfficientNetModel, cfg, pixels(), size,
                    batchnorm=True)
