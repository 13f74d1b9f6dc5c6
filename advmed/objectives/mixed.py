"""A mixed batch: a fraction of each training batch replaced by the training attack's images."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.objectives.base import Criterion, Objective, ObjectiveOutput
from advmed.objectives.divergences import valid_pixels
from advmed.objectives.inner import attacked
from advmed.objectives.validation import check_unit


def mix_adversarial(
    model: nn.Module, attack: Attack | None, x: Tensor, y: Tensor, fraction: float, mask: Tensor | None = None
) -> Tensor:
    """``x`` with its first ``round(fraction * N)`` samples (halves rounded up) replaced by ``attack``'s
    images made against ``model`` now. The batch is shuffled, so its first samples are a random subset."""
    n_adv = math.floor(fraction * len(x) + 0.5)
    if n_adv == 0:
        return x
    head = attacked(attack, model, x[:n_adv], y[:n_adv], None if mask is None else mask[:n_adv])
    return torch.cat([head, x[n_adv:]])


class Mixed(Objective):
    """``criterion(f(x_mix), y)`` where ``x_mix`` is the batch with its first ``round(fraction * N)``
    samples replaced by the training attack's images: adversarial training in the mixed-batch form
    of Goodfellow et al. 2015 (their mix of clean and adversarial loss, here by sample count) and,
    with Inverse FGSM, the online form of Pervin et al.'s augmentation.

    Exactly what ``model.adv_fraction`` did before the objective group existed (same images, same
    loss, same random stream): ``objective=standard model.adv_fraction=0.5`` still spells it and trains
    bit for bit as ``objective=mixed objective.fraction=0.5``. ``train/acc`` is on the mixed batch.

    Args:
        fraction: share of each batch attacked, in [0, 1]; 0 trains on the clean batch.
        ignore_index: see :class:`~advmed.objectives.base.Objective`.
    """

    name = "mixed"

    def __init__(self, fraction: float = 0.5, *, ignore_index: int | None = None) -> None:
        super().__init__(ignore_index=ignore_index)
        self.fraction = check_unit("fraction", fraction)

    def training_attack(self, train_attack: Attack | None) -> Attack | None:
        if self.fraction > 0 and train_attack is None:
            raise ValueError(
                f"objective=mixed (objective.fraction={self.fraction:g}) needs a training attack: set "
                "attack@train_attack=fgsm (or pgd, inverse_fgsm, ...), or objective.fraction=0"
            )
        return train_attack

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: Criterion, attack: Attack | None = None
    ) -> ObjectiveOutput:
        labels, weight = valid_pixels(y, self.ignore_index)
        mask = None if weight is None else weight.bool()
        logits = model(mix_adversarial(model, attack, x, labels, self.fraction, mask))
        return ObjectiveOutput(criterion(logits, labels, weight), logits)
