"""Fast Gradient Sign Method."""

from __future__ import annotations

import torch

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.result import AttackResult


class FGSM(Attack):
    """FGSM (Goodfellow et al. 2015, "Explaining and harnessing adversarial examples"):
    ``x_adv = clip_[0,1](x + eps * sign(grad_x loss(model(x), y)))``.

    Targeted (``targeted=True``): ``x - eps * sign(grad_x loss(model(x), target))``.
    ``eps`` is the L-inf budget in [0, 1]. Other keyword args: see :class:`Attack`.
    Matches ``torchattacks.FGSM`` and ART's ``FastGradientMethod`` (norm=inf).
    """

    # +1 ascends the objective; InverseFGSM descends it.
    _direction: float = 1.0

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        _, grad = batch.gradient(batch.x, None)
        return AttackResult(torch.add(batch.x, grad.sign_(), alpha=self._direction * self.eps).clamp_(0, 1))
