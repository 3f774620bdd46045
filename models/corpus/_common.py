"""Shared builder of the corpus factories: a transformers model from a small config with
seeded random weights (never from_pretrained), in eval mode, and its example inputs.

Every factory of the corpus is `name(size="small") -> (model, example_inputs)`, a call of
`hf_model` with the config class, the model class, the small config and an input maker.
The input makers draw seeded tensors shaped from the config; each returns the tuple of
positional inputs in the order of the model's forward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

Inputs = Callable[[Any], tuple[torch.Tensor, ...]]

BATCH = 2
SEQ = 16

# model -> its input maker and config, for draws of valid inputs (input_draws).
_MAKERS: weakref.WeakKeyDictionary[nn.Module, tuple[Inputs, Any]] = weakref.WeakKeyDictionary()


def hf_model(config_cls: Any, model_cls: Any, config: dict[str, Any], inputs: Inputs,
             size: str = "small", *, batchnorm: bool = False,
             wrap: Callable[[nn.Module], nn.Module] | None = None
             ) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """`model_cls(config_cls(**config))` with seed 0, in eval mode, and `inputs(config)`.

    batchnorm: give BatchNorm layers random running statistics (fresh ones are the
    identity, which hides mistakes). wrap: a module around the model (built after seeding).
    """
    if size != "small":
        raise ValueError(f"the corpus has only size='small', not {size!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = config_cls(**config)
        model = model_cls(cfg)
        if batchnorm:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        if wrap is not None:
            model = wrap(model)
        model.eval()
        example = inputs(cfg)
    _MAKERS[model] = (inputs, cfg)
    return model, example


def input_draws(model: nn.Module, n: int = 2, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """`n` more inputs of a corpus model, made like its example with other seeds: valid
    inputs (masks padded at the end, as tokenizers pad), where fxlower's own fresh draws
    (random values in the example's range) make masks no tokenizer makes. The corpus
    passes them as `verify_inputs`."""
    maker, cfg = _MAKERS[model]
    out = []
    with torch.random.fork_rng(devices=[]):
        for k in range(n):
            torch.manual_seed(seed + k)
            out.append(maker(cfg))
    return out


class ByKeyword(nn.Module):
    """Calls the wrapped model as model(input_ids=..., attention_mask=...), for models whose
    forward has another argument (past_key_values) between the two."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def _mask(batch: int, length: int) -> torch.Tensor:
    """All ones, but the last sequence is right-padded by a quarter."""
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[-1, length - length // 4 :] = 0
    return mask


def tokens(mask: bool = True, types: bool = False, seq: int = SEQ) -> Inputs:
    """(input_ids[, attention_mask][, token_type_ids]); the ids span the whole table."""

    def make(cfg: Any) -> tuple[torch.Tensor, ...]:
        ids = torch.randint(0, cfg.vocab_size, (BATCH, seq))
        ids[0, 0], ids[0, 1] = 0, cfg.vocab_size - 1
        out = [ids]
        if mask:
            out.append(_mask(BATCH, seq))
        if types:
            tt = torch.zeros(BATCH, seq, dtype=torch.int64)
            tt[:, seq // 2 :] = 1
            out.append(tt)
        return tuple(out)

    return make


def pixels(image: int | None = None) -> Inputs:
    """(pixel_values,) of the config's image size (or `image`)."""

    def make(cfg: Any) -> tuple[torch.Tensor, ...]:
        side = image or cfg.image_size
        return (torch.randn(BATCH, cfg.num_channels, side, side),)

    return make


def waveform(samples: int = 1600, mask: bool = True) -> Inputs:
    """(input_values[, attention_mask]) of raw audio; the last clip is padded at its end."""

    def make(cfg: Any) -> tuple[torch.Tensor, ...]:
        wave = torch.randn(BATCH, samples)
        if not mask:
            return (wave,)
        m = _mask(BATCH, samples)
        wave[m == 0] = 0.0
        return wave, m

    return make


def mel(cfg: Any) -> tuple[torch.Tensor, ...]:
    """(input_features,) of a Whisper encoder: 2 * max_source_positions frames."""
    return (torch.randn(BATCH, cfg.num_mel_bins, 2 * cfg.max_source_positions),)
