"""Tiny models whose logits can be worked out by hand, and a batch-normalised net for the
inner-loop contract (eval mode, untouched statistics, no parameter gradients)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advmed.attacks.core.base import Attack
from advmed.attacks.core.result import AttackResult

K = 3  # classes of the hand-worked models


class PixelLinear(nn.Module):
    """logits = 4 * x - 2 at every pixel, one class per channel (a 1x1 convolution with fixed weights).
    Classification: images (N, 3, 1, 1) give logits (N, 3); segmentation: (N, 3, H, W) give (N, 3, H, W).
    Pixels do not interact, so an ignored pixel can change nothing else."""

    def __init__(self, segmentation: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(K, K, 1)
        with torch.no_grad():
            self.conv.weight.copy_(4 * torch.eye(K).reshape(K, K, 1, 1))
            self.conv.bias.fill_(-2.0)
        self.segmentation = segmentation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv(x)
        return logits if self.segmentation else logits.flatten(1)


class SmallBNNet(nn.Module):
    """conv -> batch norm -> relu -> pooled linear: batch-norm statistics to watch, parameters to differentiate."""

    def __init__(self, in_channels: int = 3, classes: int = K, segmentation: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)
        self.segmentation = segmentation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.body(x))
        return logits if self.segmentation else logits.mean((2, 3))


def ce_criterion(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The classifier module's criterion (unweighted cross-entropy, batch mean), or a per-pixel mean
    per image over the weighted pixels, then over the batch (the segmenter's ``loss=ce``)."""
    ce = F.cross_entropy(logits.float(), y, reduction="none")
    if ce.ndim == 1:
        return ce.mean()
    n = ce.shape[0]
    if weight is None:
        return ce.reshape(n, -1).mean(1).mean()
    return ((ce * weight).reshape(n, -1).sum(1) / weight.reshape(n, -1).sum(1).clamp_min(1)).mean()


class FixedAttack(Attack):
    """Returns the images it was built with: x' chosen by the test."""

    def __init__(self, x_adv: torch.Tensor) -> None:
        super().__init__(eps=1.0)
        self.x_adv = x_adv
        self.calls = []

    def run(self, model, x, y, target=None, mask=None) -> AttackResult:
        self.calls.append({"y": y.clone(), "mask": None if mask is None else mask.clone()})
        return AttackResult(self.x_adv.clone())

    def _perturb(self, batch):  # pragma: no cover - run is overridden
        raise NotImplementedError
