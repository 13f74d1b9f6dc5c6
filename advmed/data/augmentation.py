"""GPU augmentation for histology-like tiles, built from plain config values.

Tissue has no canonical orientation, so flips and 90-degree rotations are label-preserving;
mild colour jitter mimics stain variation. Applied to float [0, 1] batches (N, C, H, W) on the
device after transfer (see ``ClassificationDataModule.on_after_batch_transfer``), and the output
is clamped back to [0, 1] so the pixel-space contract holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import nn

from advmed.corruptions.augmentation import RandomCorruption
from advmed.corruptions.stain_jitter import RandomStainShift


class RandomRot90(nn.Module):
    """Rotate each image by a random multiple of 90 degrees with probability ``p``.

    kornia's ``RandomRotation90`` resamples through an affine warp (bilinear, float noise);
    ``torch.rot90`` is an exact pixel permutation, which keeps augmented pixels on the original
    grid and values. Needs square images so that every rotation keeps the batch shape.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"RandomRot90 needs square images, got {tuple(x.shape[-2:])}")
        quarter_turns = torch.randint(1, 4, (x.shape[0],), device=x.device)
        quarter_turns = torch.where(torch.rand(x.shape[0], device=x.device) < self.p, quarter_turns, 0)
        out = x.clone()
        for k in (1, 2, 3):
            chosen = quarter_turns == k
            if chosen.any():
                out[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Clamp01(nn.Module):
    """Clamp to the [0, 1] pixel range (colour jitter can leave it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


def build_augmentation(
    in_channels: int = 3,
    enabled: bool = True,
    hflip: float = 0.5,
    vflip: float = 0.5,
    rot90: float = 0.5,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    hue: float = 0.02,
    jitter_p: float = 0.5,
    stain: float = 0.0,
    stain_sigma: Sequence[float] = (0.0, 0.05),
    corruptions: str | Sequence[str] | None = None,
    modality: str | None = None,
) -> nn.Sequential | None:
    """Build the training augmentation, or ``None`` when ``enabled`` is false.

    ``hflip``/``vflip``/``rot90``/``jitter_p`` are per-image probabilities (0 removes the step);
    ``brightness``/``contrast``/``saturation``/``hue`` are kornia ``ColorJitter`` strengths.
    Saturation and hue need colour, so they are skipped for grayscale data (``in_channels != 3``).
    ``stain`` is the per-image probability of HED stain jitter (Tellez et al. 2019,
    :class:`~advmed.corruptions.stain_jitter.RandomStainShift`) with a strength drawn from
    ``stain_sigma`` (``[0, 0.05]``: Tellez's HED-light; ``[0, 0.2]``: HED-strong); 0 leaves it out.
    It needs H&E RGB tiles: refused on grayscale data. ``corruptions`` (``all`` or a list of
    names; None or empty: off) adds MedMNIST-C's corruption augmentation of the data's
    ``modality`` (:class:`~advmed.corruptions.augmentation.RandomCorruption`), after the colour steps.
    """
    if not enabled:
        return None
    steps: list[nn.Module] = []
    if hflip > 0:
        steps.append(K.RandomHorizontalFlip(p=hflip))
    if vflip > 0:
        steps.append(K.RandomVerticalFlip(p=vflip))
    if rot90 > 0:
        steps.append(RandomRot90(p=rot90))
    if stain > 0:
        if in_channels != 3:
            raise ValueError(f"data.augment.stain={stain}: HED stain jitter is defined for H&E (3-channel RGB) tiles, "
                             f"and this data has {in_channels} channel(s): set data.augment.stain=0")
        steps.append(RandomStainShift(p=stain, sigma=stain_sigma))
    if in_channels != 3:
        saturation = hue = 0.0
    if jitter_p > 0 and any(v > 0 for v in (brightness, contrast, saturation, hue)):
        steps.append(K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_p))
    if corruptions:
        if modality is None:
            raise ValueError(f"data.augment.corruptions={corruptions}: this data declares no modality (histology, ct, "
                             "xray), so MedMNIST-C's corruptions are not defined for it")
        steps.append(Clamp01())  # the corruptions take [0, 1] images
        steps.append(RandomCorruption(modality, corruptions))
    steps.append(Clamp01())
    return nn.Sequential(*steps)
