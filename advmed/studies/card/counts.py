"""Per-class counts of a card condition, gathered from the test step's outputs: what the module
logs (accuracy) does not give the balanced accuracy MedMNIST-C's error measure is built on."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class ConfusionCounts(L.Callback):
    """Confusion matrices (true x predicted) of the clean and the shifted predictions of a
    classifier's test run, summed over the batches (and over the ranks under DDP). Reset at the
    start of every test run, so one instance serves every condition of a card. With ``num_classes``
    None (a segmenter: its metrics come from its own test step) it counts the images only."""

    def __init__(self, num_classes: int | None) -> None:
        self.num_classes = int(num_classes or 1)
        self.per_class = num_classes is not None
        self.clean = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self.shifted = torch.zeros_like(self.clean)
        self.images = 0

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clean.zero_()
        self.shifted.zero_()
        self.images = 0

    def _add(self, matrix: Tensor, y: Tensor, pred: Tensor) -> None:
        index = y.flatten().long().cpu() * self.num_classes + pred.flatten().long().cpu()
        matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, dict) or "pred" not in outputs:
            return
        self.images += int(outputs["y"].shape[0])
        if not self.per_class:
            return
        self._add(self.clean, outputs["y"], outputs["pred"])
        if "adv_pred" in outputs:
            self._add(self.shifted, outputs["y"], outputs["adv_pred"])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:  # every rank saw its share of the test split
            for name in ("clean", "shifted"):
                total = trainer.strategy.reduce(getattr(self, name).to(pl_module.device), reduce_op="sum")
                setattr(self, name, total.long().cpu())
            self.images = int(trainer.strategy.reduce(torch.tensor(self.images, device=pl_module.device), reduce_op="sum"))


def balanced_accuracy(matrix: Tensor) -> float:
    """The mean over the classes present of their recall (sklearn's ``balanced_accuracy_score``)."""
    support = matrix.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    recall = matrix.diag()[present].double() / support[present].double()
    return float(recall.mean())
