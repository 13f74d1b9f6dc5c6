"""Differentiable augmentation of everything a GAN's discriminator sees (DiffAugment; Zhao et al.,
"Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020), for small training sets
such as Lockshin et al.'s 18,000 tiles.

The same random transformations are applied to real and generated images before the discriminator,
in the discriminator's and the generator's steps (and inside R1), and gradients flow through them, so
the discriminator cannot memorise the few real images while the generator still learns the
un-augmented distribution (Zhao et al. sec. 3).

Written here rather than taken from kornia because the method is defined by these exact operations:
kornia's colour operations clamp to [0, 1] (zero gradient on every saturated pixel) and scale
contrast about 0 instead of the image mean, and its translation resamples bilinearly instead of
shifting whole pixels with a constant fill. Images are in [0, 1]; the paper's [-1, 1] constants are
converted (a brightness shift of +-0.5 there is +-0.25 here; the zero fill there is 0.5 here).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

POLICIES = ("color", "translation", "cutout")
FILL = 0.5  # the [-1, 1] paper's zero: mid-grey


def _rand(x: Tensor, *shape: int) -> Tensor:
    return torch.rand(x.shape[0], *shape, device=x.device, dtype=x.dtype)


def brightness(x: Tensor) -> Tensor:
    """Add one value in [-0.25, 0.25) per image."""
    return x + (_rand(x, 1, 1, 1) - 0.5) * 0.5


def saturation(x: Tensor) -> Tensor:
    """Scale each pixel's distance from its channel mean by a factor in [0, 2) per image."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1) * 2) + mean


def contrast(x: Tensor) -> Tensor:
    """Scale each pixel's distance from the image mean by a factor in [0.5, 1.5) per image."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its side in each direction, filling with mid-grey."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    shifted = x.flatten(2).gather(2, index).view_as(x)
    return torch.where(inside, shifted, torch.full_like(x, FILL))


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Fill one square of ``ratio`` times the side per image, at a random centre, with mid-grey."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), device=x.device)
    top, left = cy - size_y // 2, cx - size_x // 2  # may start outside the image: the hole is then cropped
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return torch.where(hole.unsqueeze(1), torch.full_like(x, FILL), x)


class DiffAugment(nn.Module):
    """Apply the policies of ``policy`` (a comma-separated subset of ``color,translation,cutout``, the
    paper's full set for StyleGAN2) in that order, each with fresh randomness per image, drawn from
    torch's global RNG (seeded by the entry point). Empty or None: the identity."""

    def __init__(self, policy: str | None = "color,translation,cutout") -> None:
        super().__init__()
        names = [p.strip() for p in (policy or "").split(",") if p.strip()]
        unknown = [p for p in names if p not in POLICIES]
        if unknown:
            raise ValueError(f"model.diff_augment={policy!r}: unknown {unknown}; use a comma-separated subset of "
                             f"{','.join(POLICIES)}, or null for none")
        self.policies = tuple(p for p in POLICIES if p in names)

    def forward(self, x: Tensor) -> Tensor:
        if "color" in self.policies:
            x = contrast(saturation(brightness(x)))
        if "translation" in self.policies:
            x = translation(x)
        if "cutout" in self.policies:
            x = cutout(x)
        return x

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policies)!r}"
