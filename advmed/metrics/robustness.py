"""The test metrics of a classifier under attack, shared by every module that reports them."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from advmed.attacks.core.result import AttackResult
from advmed.metrics.attack_success import AttackSuccessRate


class AdversarialClassificationMetrics(nn.Module):
    """Adversarial accuracy, attack success rate, perturbation size (mean L-inf, L2) and the
    attack's own per-sample stats (e.g. ``area_fraction``), logged as ``<prefix>/<name>``.

    Used by modules in ``test_step`` (``prefix="test"``): ``update`` then ``log`` each batch; the
    values are torchmetrics states, so they aggregate over the epoch and sync across ranks.
    """

    def __init__(self, num_classes: int, prefix: str = "test") -> None:
        super().__init__()
        self.prefix = prefix
        self.adv_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.attack_success_rate = AttackSuccessRate()
        self.linf, self.l2 = MeanMetric(), MeanMetric()
        self.stats = nn.ModuleDict()  # filled with the stats the attack reports

    def update(self, x: Tensor, y: Tensor, clean_pred: Tensor, adv_pred: Tensor, result: AttackResult,
               attack_target: Tensor | None = None) -> None:
        delta = (result.x_adv - x).flatten(1)
        self.adv_acc(adv_pred, y)
        self.attack_success_rate(clean_pred, adv_pred, y, attack_target)
        self.linf(delta.abs().amax(1))
        self.l2(delta.norm(dim=1))
        for name, values in result.stats.items():
            if name not in self.stats:
                self.stats[name] = MeanMetric().to(x.device)
            self.stats[name](values.float())

    def log_to(self, module) -> None:
        """``module.log`` every metric (epoch-level aggregation happens in torchmetrics)."""
        # Lightning finds a logged metric by attribute name, and caches the names at its first
        # log: the stats created on the fly need their name spelt out.
        attribute = next(name for name, child in module.named_modules() if child is self)
        for name in ("adv_acc", "attack_success_rate", "linf", "l2"):
            module.log(f"{self.prefix}/{name}", getattr(self, name), metric_attribute=f"{attribute}.{name}")
        for name, metric in self.stats.items():
            module.log(f"{self.prefix}/{name}", metric, metric_attribute=f"{attribute}.stats.{name}")


def attack_targets(attack, y: Tensor) -> Tensor | None:
    """The class each image is pulled toward, for a targeted attack with a fixed target class."""
    if getattr(attack, "targeted", False) and getattr(attack, "target_class", None) is not None:
        return torch.full_like(y, attack.target_class)
    return None
