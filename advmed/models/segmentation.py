"""Semantic segmentation LightningModule (U-Net) with adversarial training / augmentation and
attacked testing, the segmentation counterpart of :class:`~advmed.models.classifier.ClassifierModule`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from advmed.attacks.core.losses import cross_entropy, soft_dice_loss
from advmed.metrics.segmentation import SegmentationScores
from advmed.models.supervised import SupervisedModule
from advmed.nets import UNet
from advmed.utils.run import plain

LOSSES = ("ce", "dice", "ce+dice")


class SegmentationModule(SupervisedModule):
    """Trains a U-Net on [0, 1] slices with (N, H, W) label maps; tests it clean and under an attack.

    Logged: ``train/loss``; ``val/dice``, ``val/iou`` and per organ ``val/dice_<organ>``,
    ``val/iou_<organ>``; the same under ``test/``; with a test attack also ``test/adv_dice``,
    ``test/adv_iou``, per organ ``test/adv_dice_<organ>`` ..., the drop ``test/dice_drop``
    (clean minus attacked mean Dice, and per organ ``test/dice_drop_<organ>``), the mean L-inf /
    L2 size of the perturbation and the attack's own stats. Scores follow the aggregation rule of
    :mod:`advmed.metrics.segmentation` (absent organs neither 0 nor 1).

    Args:
        num_classes, in_channels, class_names: labels 0..num_classes-1, ``class_names[0]`` the background.
        image_size: recorded so that evaluation can check the data matches.
        base_width, depth, batch_norm, dropout: :class:`~advmed.nets.UNet` layout.
        loss: ``ce`` (the paper's categorical cross-entropy), ``dice`` (soft Dice, V-Net) or ``ce+dice``.
        optimizer, scheduler, adv_fraction: see :class:`~advmed.models.supervised.SupervisedModule`.
        channels_last: run the network in channels-last memory format (faster convolutions on GPU).
        train_attack, test_attack: the attacks of adversarial training and of testing (not saved).
        objective: the loss of a training step (:mod:`advmed.objectives`, per-pixel forms; None: standard
            training with ``loss``; not saved). Its terms are logged as ``train/<term>``.
    """

    monitor = ("val/dice", "max")
    task = "segmentation"

    def __init__(
        self,
        num_classes: int = 5,
        in_channels: int = 1,
        class_names: list[str] | None = None,
        image_size: int | None = None,
        base_width: int = 16,
        depth: int = 4,
        batch_norm: bool = True,
        dropout: float = 0.0,
        loss: str = "ce",
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        adv_fraction: float = 0.0,
        channels_last: bool = False,
        train_attack=None,
        test_attack=None,
        objective=None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r} must be one of {LOSSES}")
        class_names = ["background", *(f"class_{i}" for i in range(1, num_classes))] if class_names is None else class_names
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        optimizer, scheduler, class_names = (plain(v) for v in (optimizer, scheduler, class_names))
        self.save_hyperparameters(ignore=["train_attack", "test_attack", "objective"])
        self.net = UNet(num_classes, in_channels, base_width, depth, batch_norm, dropout)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.init_attacks(train_attack, test_attack, objective)
        self.val_scores = SegmentationScores(class_names)
        self.test_scores = SegmentationScores(class_names)
        self.test_adv_scores = SegmentationScores(class_names)
        self.linf, self.l2 = MeanMetric(), MeanMetric()
        self.attack_stats = nn.ModuleDict()  # filled with the stats the test attack reports

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def criterion(self, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``model.loss`` averaged over the batch; per image over all pixels, or over those ``weight`` keeps."""
        name = self.hparams.loss
        loss = logits.new_zeros(())
        if "ce" in name.split("+"):
            loss = loss + cross_entropy(logits, y, weight).mean()
        if "dice" in name.split("+"):
            loss = loss + soft_dice_loss(logits, y, weight).mean()
        return loss

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.check_finite(self.criterion(logits, y))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.objective_step(x, y)
        return None if out is None else out.loss  # None: not finite, nonfinite_loss=skip

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", self._loss(logits, y), prog_bar=True, sync_dist=True)
        self.val_scores.update(logits.argmax(1), y)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self.val_scores)

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        pred = logits.argmax(1)
        self.log("test/loss", self._loss(logits, y), sync_dist=True)
        self.test_scores.update(pred, y)
        out = {"x": x, "y": y, "pred": pred}
        if self.test_attack is None:
            return out
        result = self.test_attack.run(self, x, y)
        adv_pred = self(result.x_adv).argmax(1)
        self.test_adv_scores.update(adv_pred, y)
        delta = (result.x_adv - x).flatten(1)
        self.linf(delta.abs().amax(1))
        self.l2(delta.norm(dim=1))
        for name, values in result.stats.items():
            if name not in self.attack_stats:
                self.attack_stats[name] = MeanMetric().to(x.device)
            self.attack_stats[name](values.float())
        out.update(x_adv=result.x_adv, adv_pred=adv_pred, region=result.region)
        return out

    def on_test_epoch_end(self) -> None:
        clean = self._log_scores("test", self.test_scores)
        if self.test_attack is None:
            return
        adversarial = self._log_scores("test", self.test_adv_scores, prefix="adv_")
        for name, value in adversarial.items():
            if name.startswith("dice"):
                self.log(f"test/dice_drop{name[len('dice'):]}", clean[name] - value)
        self.log("test/linf", self.linf.compute())
        self.log("test/l2", self.l2.compute())
        for name, metric in self.attack_stats.items():
            self.log(f"test/{name}", metric.compute())
        for metric in (self.linf, self.l2, *self.attack_stats.values()):
            metric.reset()

    def _log_scores(self, split: str, scores: SegmentationScores, prefix: str = "") -> dict[str, torch.Tensor]:
        values = scores.compute()
        for name, value in values.items():
            self.log(f"{split}/{prefix}{name}", value, prog_bar=name == "dice" and not prefix)
        scores.reset()
        return values
