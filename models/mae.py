"""MAE random masking (He et al., "Masked Autoencoders Are Scalable Vision Learners").

Patch embedding (a strided conv) + positional embedding, then the reference
`random_masking`: argsort of per-token noise, gather of the kept tokens with
`ids_keep.unsqueeze(-1).repeat(1, 1, D)`, and gather of the binary mask with `ids_restore`.
The noise is an input (not drawn inside) so runs repeat and verification can compare.
Outputs (x_masked, mask, ids_restore), as in the reference encoder.
"""

from __future__ import annotations

import torch
import torch.nn as nn

SIZES = {
    "small": dict(batch=2, image=32, patch=4, channels=3, dim=32, mask_ratio=0.75),
    "full": dict(batch=2, image=224, patch=16, channels=3, dim=768, mask_ratio=0.75),
}


def random_masking(x: torch.Tensor, noise: torch.Tensor, mask_ratio: float):
    """The MAE reference implementation, with the noise passed in."""
    N, L, D = x.shape  # batch, length, dim
    len_keep = int(L * (1 - mask_ratio))

    # sort noise for each sample: ascend, small is keep, large is remove
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)

    # keep the first subset
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))

    # generate the binary mask: 0 is keep, 1 is remove
    mask = torch.ones([N, L], device=x.device)
    mask[:, :len_keep] = 0
    # unshuffle to get the binary mask
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return x_masked, mask, ids_restore


class MAEMasking(nn.Module):
    def __init__(self, image: int, patch: int, channels: int, dim: int, mask_ratio: float) -> None:
        super().__init__()
        self.mask_ratio = mask_ratio
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        num_patches = (image // patch) ** 2
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor):
        x = self.patch_embed(imgs).flatten(2).transpose(1, 2)  # [N, L, D]
        x = x + self.pos_embed
        x_masked, mask, ids_restore = random_masking(x, noise, self.mask_ratio)
        return self.norm(x_masked), mask, ids_restore


def build(size: str = "small") -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MAEMasking(s["image"], s["patch"], s["channels"], s["dim"], s["mask_ratio"]).eval()
        imgs = torch.randn(s["batch"], s["channels"], s["image"], s["image"])
        num_patches = (s["image"] // s["patch"]) ** 2
        noise = torch.rand(s["batch"], num_patches)
    return model, (imgs, noise)
