"""Dice and IoU per organ and their mean, and pixel accuracy, for one split of a segmentation run.

Aggregation rule (why: an organ absent from a slice must count neither as 0 nor as 1): the
counts (true positives, false positives, false negatives) of each class are summed over every
pixel of every image seen in the epoch, and Dice / IoU are computed once from the sums
(torchmetrics ``DiceScore(aggregation_level="global")`` and ``MulticlassJaccardIndex``, whose
states sync across DDP ranks). So a slice where an organ is absent from both the label and the
prediction adds nothing to that organ's score, a slice where it is predicted but absent adds
false positives, and an organ absent from the whole split and never predicted has no score
(NaN) and is left out of the mean. The mean (``dice``, ``iou``) is over the organs, background
excluded. For CT volumes this is the Dice of the split's voxels pooled, which equals the usual
per-volume Dice when the split holds one volume. Pixel accuracy (``pixel_acc``) is the fraction of
the split's pixels labelled right, background included (SEA's figure of merit, Croce et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.segmentation import DiceScore


class SegmentationScores(nn.Module):
    """Global Dice and IoU per organ (``class_names[1:]``) and their means, and pixel accuracy.

    ``update(pred, target)`` takes label maps (N, H, W); ``compute()`` returns
    ``{"dice": ..., "iou": ..., "pixel_acc": ..., "dice_<organ>": ..., "iou_<organ>": ...}`` as float tensors
    (NaN for an organ with no pixel in labels or predictions). ``reset()`` starts a new epoch.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        super().__init__()
        self.organs = [str(name) for name in class_names[1:]]
        num_classes = len(class_names)
        self.dice = DiceScore(
            num_classes=num_classes, include_background=False, average="none",
            input_format="index", aggregation_level="global",
        )
        self.iou = MulticlassJaccardIndex(num_classes=num_classes, average="none", zero_division=float("nan"))
        self.pixel_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", multidim_average="global")

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.dice.update(pred, target)
        self.iou.update(pred, target)
        self.pixel_acc.update(pred, target)

    def compute(self) -> dict[str, Tensor]:
        dice = self.dice.compute().reshape(-1)  # organs only
        iou = self.iou.compute()[1:]
        # torchmetrics' global Dice of a class with no pixels anywhere is 0 in some versions; make it NaN.
        absent = iou.isnan()
        dice = torch.where(absent, torch.full_like(dice, float("nan")), dice)
        scores = {"dice": dice.nanmean(), "iou": iou.nanmean(), "pixel_acc": self.pixel_acc.compute()}
        for organ, d, j in zip(self.organs, dice, iou):
            scores[f"dice_{organ}"], scores[f"iou_{organ}"] = d, j
        return scores

    def reset(self) -> None:
        self.dice.reset()
        self.iou.reset()
        self.pixel_acc.reset()
