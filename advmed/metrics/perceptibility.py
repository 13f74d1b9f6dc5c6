"""Perceptibility of an adversarial perturbation, Chen et al. 2019 eq. 7."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class Perceptibility(Metric):
    """``p = 1 / (H W) * sum_ij |r_ij|`` with ``r = I_DV - I0``, per image (channels averaged too),
    then averaged over every image seen; states sync across DDP ranks."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: Tensor, x_adv: Tensor) -> None:
        if x.shape != x_adv.shape:
            raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} must have the same shape")
        per_image = (x_adv.detach() - x.detach()).abs().flatten(1).mean(1)
        self.total += per_image.double().sum()
        self.count += per_image.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).float()
