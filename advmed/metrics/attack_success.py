"""Attack success rate, as defined in the PGD attack-success study.

Only images the model classifies correctly before the attack count: a natively
misclassified image cannot be "fooled", so including it would inflate the rate.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def attack_success_mask(
    clean_pred: torch.Tensor,
    adv_pred: torch.Tensor,
    target: torch.Tensor,
    attack_target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (eligible, fooled).

    Untargeted: eligible = clean prediction correct; fooled = eligible and flipped.
    Targeted (``attack_target``, the class each image is pulled toward): only correctly
    classified images of another class are eligible (an image already of the target class
    cannot be moved there), and fooled means predicted as the attack's target.
    """
    eligible = clean_pred == target
    if attack_target is None:
        return eligible, eligible & (adv_pred != target)
    eligible = eligible & (target != attack_target)
    return eligible, eligible & (adv_pred == attack_target)


class AttackSuccessRate(Metric):
    """Fraction of correctly classified images whose prediction the attack changes (untargeted)
    or moves to the attack's target class (targeted; see :func:`attack_success_mask`).

    ``update(clean_pred, adv_pred, target, attack_target=None)`` takes class indices of shape (N,).
    ``compute()`` returns NaN when no image was correctly classified (rate undefined).
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("fooled", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("eligible", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        clean_pred: torch.Tensor,
        adv_pred: torch.Tensor,
        target: torch.Tensor,
        attack_target: torch.Tensor | None = None,
    ) -> None:
        eligible, fooled = attack_success_mask(clean_pred, adv_pred, target, attack_target)
        self.eligible += eligible.sum()
        self.fooled += fooled.sum()

    def compute(self) -> torch.Tensor:
        if self.eligible == 0:
            return torch.tensor(float("nan"))
        return self.fooled.float() / self.eligible.float()
