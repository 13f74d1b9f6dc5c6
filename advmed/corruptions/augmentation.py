"""MedMNIST-C's corruptions as a training augmentation (Di Salvo et al. 2024, ``AugMedMNISTC``):
each image gets one of the chosen corruptions or none, uniformly (the identity is one of the
choices, as in the paper), at a severity drawn uniformly from 1..5.

One difference from ``AugMedMNISTC``: the paper draws a continuous strength between the
parameters of severities 1 and 5; here the strength is one of the five published severities, so
that every augmented image is one the evaluation (the card) also produces.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from advmed.corruptions.base import SEVERITIES
from advmed.corruptions.medmnist_c import corruptions_for


class RandomCorruption(nn.Module):
    """Per image: the identity or one of ``names`` (MedMNIST-C corruptions of ``modality``), uniformly,
    at a uniform severity 1..5. Draws from the global RNG of the batch's device (like kornia's
    augmentations), so ``seed_everything`` governs it; each chosen group is corrupted with a seed
    drawn from it too. Float ``(N, C, H, W)`` [0, 1] batches on any device."""

    def __init__(self, modality: str, names: str | Iterable[str] | None = "all") -> None:
        super().__init__()
        self.shifts = corruptions_for(modality, None if names in (None, "all") else names)
        self.modality = modality

    def forward(self, x: Tensor) -> Tensor:
        n, choices = len(x), len(self.shifts) + 1  # the last choice is the identity
        which = torch.randint(choices, (n,), device=x.device).cpu()
        severity = torch.randint(len(SEVERITIES), (n,), device=x.device).cpu() + 1
        out = x.clone()
        for k, shift in enumerate(self.shifts.values()):
            for s in SEVERITIES:
                idx = ((which == k) & (severity == s)).nonzero().flatten()
                if len(idx):
                    seed = int(torch.randint(2**31 - 1, (1,)))
                    out[idx.to(x.device)] = shift(x[idx.to(x.device)], s, seed)
        return out

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, corruptions={list(self.shifts)}"
