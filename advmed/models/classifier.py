"""Image classifier LightningModule trained with any objective (standard, adversarial: :mod:`advmed.objectives`)
and tested clean and under an attack."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from advmed.metrics.robustness import AdversarialClassificationMetrics, attack_targets
from advmed.models.supervised import SupervisedModule
from advmed.nets import ResNetClassifier
from advmed.utils.run import plain


class ClassifierModule(SupervisedModule):
    """Trains a ResNet on [0, 1] images; tests it clean and under an attack.

    All constructor arguments except the two attacks are plain values and are saved in the
    checkpoint, so ``load_module(path)`` rebuilds the network with no config at hand.

    Args:
        arch, num_classes, in_channels, pretrained_path, pretrained_missing: passed to :class:`ResNetClassifier`.
        class_names, image_size: recorded so that evaluation can check the data matches.
        optimizer: a Hydra ``_target_`` dict for a ``torch.optim`` optimizer (params are added).
        scheduler: an optional ``_target_`` dict for a ``torch.optim.lr_scheduler`` scheduler.
        adv_fraction: fraction of each training batch replaced by ``train_attack``'s
            adversarial images (adversarial training / augmentation); 0 disables it. The standard
            objective's spelling of ``objective=mixed`` (see :class:`~advmed.models.supervised.SupervisedModule`).
        channels_last: run the network in channels-last memory format (faster on GPUs).
        train_attack: attack used for adversarial training (not saved in the checkpoint).
        objective: the loss of a training step (:mod:`advmed.objectives`; None: standard training;
            not saved in the checkpoint). Logged: ``train/loss``, its terms as ``train/<term>`` and
            ``train/acc`` on the logits the objective names.
        test_attack: attack applied in ``test_step``; adds ``test/adv_acc``,
            ``test/attack_success_rate`` (targeted attacks: moved to their target class), the mean
            L-inf / L2 size of the perturbation and the attack's own stats (e.g. ``test/area_fraction``).
    """

    monitor = ("val/acc", "max")  # the metric that picks the best checkpoint
    task = "classification"

    def __init__(
        self,
        arch: str = "resnet34",
        num_classes: int = 9,
        in_channels: int = 3,
        pretrained_path: str | None = None,
        pretrained_missing: str = "error",
        class_names: list[str] | None = None,
        image_size: int | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        adv_fraction: float = 0.0,
        channels_last: bool = False,
        train_attack=None,
        test_attack=None,
        objective=None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        # Plain containers, so the checkpoint loads with weights_only=True (no OmegaConf objects).
        optimizer, scheduler, class_names = (plain(v) for v in (optimizer, scheduler, class_names))
        self.save_hyperparameters(ignore=["train_attack", "test_attack", "objective"])
        self.net = ResNetClassifier(arch, num_classes, in_channels, pretrained_path, pretrained_missing)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.init_attacks(train_attack, test_attack, objective)

        def acc() -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes=num_classes, average="micro")

        self.train_acc, self.val_acc, self.test_acc = acc(), acc(), acc()
        self.test_adversarial = AdversarialClassificationMetrics(num_classes, prefix="test")

    @classmethod
    def restore_kwargs(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        # The ImageNet file is not needed to restore trained weights (and may be absent here).
        return {**super().restore_kwargs(hparams), "pretrained_path": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def criterion(self, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy, averaged over the batch (or over the samples ``weight`` keeps)."""
        if weight is None:
            return F.cross_entropy(logits, y)
        return (F.cross_entropy(logits, y, reduction="none") * weight).sum() / weight.sum().clamp_min(1)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return self.check_finite(self.criterion(logits, y))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        out = self.objective_step(x, y)
        if out is None:  # not finite, nonfinite_loss=skip
            return None
        self.train_acc(out.logits.argmax(1), y)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return out.loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits.argmax(1), y)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        pred = logits.argmax(1)
        self.test_acc(pred, y)
        self.log("test/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test/acc", self.test_acc)
        out = {"x": x, "y": y, "pred": pred, "confidence": logits.softmax(1).amax(1)}
        if self.test_attack is None:
            return out
        result = self.test_attack.run(self, x, y)
        adv_logits = self(result.x_adv)
        adv_pred = adv_logits.argmax(1)
        self.test_adversarial.update(x, y, pred, adv_pred, result, attack_targets(self.test_attack, y))
        self.test_adversarial.log_to(self)
        out.update(x_adv=result.x_adv, adv_pred=adv_pred, adv_confidence=adv_logits.softmax(1).amax(1), region=result.region)
        return out
