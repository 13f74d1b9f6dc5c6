"""PGD adversarial training (Madry et al. 2018): train on the training attack's images only."""

from __future__ import annotations

from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.objectives.against_attack import AgainstAttack
from advmed.objectives.base import Criterion, ObjectiveOutput


class PGDAT(AgainstAttack):
    """PGD-AT (Madry et al., ICLR 2018, "Towards deep learning models resistant to adversarial
    attacks", eq. 2.1): ``min_theta E[max_{||delta|| <= eps} L(f(x + delta), y)]``, the inner max
    approximated by the training attack, the outer loss ``criterion(f(x'), y)`` on the attacked batch
    only (no clean term).

    The attack is ``attack@train_attack`` (PGD, FGSM, ...; ``attack@train_attack=segpgd`` gives
    SegPGD-AT, Gu et al. 2022, for a segmenter). When none is configured the objective builds
    ``PGD(eps, alpha, steps)`` from its own settings and logs one line saying so. The attack runs
    the model in eval mode (batch-norm statistics untouched) and leaves no parameter gradients.
    ``train/acc`` is on the attacked batch.

    Args:
        eps, alpha, steps: the default PGD's L-inf budget, step (None: ``2.5 * eps / steps``) and
            iterations; used only when ``attack@train_attack=none``.
        ignore_index: see :class:`~advmed.objectives.base.Objective` (the attack gets ``mask``).
    """

    name = "pgd_at"

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: Criterion, attack: Attack | None = None
    ) -> ObjectiveOutput:
        x_adv, labels, weight = self.attacked_batch(model, x, y, attack)
        logits = model(x_adv)
        return ObjectiveOutput(criterion(logits, labels, weight), logits)
