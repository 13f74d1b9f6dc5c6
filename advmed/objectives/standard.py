"""Standard training: the model's own loss on the clean batch."""

from __future__ import annotations

from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.objectives.base import Criterion, Objective, ObjectiveOutput
from advmed.objectives.divergences import valid_pixels


class Standard(Objective):
    """Empirical risk minimisation: ``criterion(f(x), y)`` on the clean batch, no attack.

    The default objective (``conf/train.yaml``). A configured ``attack@train_attack`` is kept on
    the module but unused, as before the objective group existed. A module given ``model.adv_fraction
    > 0`` with this objective trains as :class:`~advmed.objectives.mixed.Mixed` with that fraction:
    the spelling every config and checkpoint before the objective group used (see
    :class:`~advmed.models.supervised.SupervisedModule`).

    ``train/acc`` is on the clean batch. Args: see :class:`~advmed.objectives.base.Objective`.
    """

    name = "standard"

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: Criterion, attack: Attack | None = None
    ) -> ObjectiveOutput:
        labels, weight = valid_pixels(y, self.ignore_index)
        logits = model(x)
        return ObjectiveOutput(criterion(logits, labels, weight), logits)
