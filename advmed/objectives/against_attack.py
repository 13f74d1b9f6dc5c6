"""What the objectives that train against ``attack@train_attack`` share (PGD-AT, MART): their default
PGD's settings, the attack they keep, and the attacked batch."""

from __future__ import annotations

from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.objectives.base import Objective
from advmed.objectives.divergences import valid_pixels
from advmed.objectives.inner import attacked, default_pgd
from advmed.objectives.validation import check_optional_unit, check_steps, check_unit


class AgainstAttack(Objective):
    """Base of objectives whose x' comes from the training attack: ``attack@train_attack`` when one is
    configured, else ``PGD(eps, alpha, steps)`` built from the objective's settings (logged).

    Args:
        eps, alpha, steps: the default PGD's L-inf budget, step (None: ``2.5 * eps / steps``) and
            iterations; used only when ``attack@train_attack=none``.
        ignore_index: see :class:`~advmed.objectives.base.Objective` (the attack gets ``mask``).
    """

    def __init__(self, eps: float = 8 / 255, alpha: float | None = None, steps: int = 10, *,
                 ignore_index: int | None = None) -> None:
        super().__init__(ignore_index=ignore_index)
        self.eps = check_unit("eps", eps)
        self.alpha = check_optional_unit("alpha", alpha)
        self.steps = check_steps(steps)

    def training_attack(self, train_attack: Attack | None) -> Attack:
        return train_attack if train_attack is not None else default_pgd(self.name, self.eps, self.alpha, self.steps)

    def attacked_batch(self, model: nn.Module, x: Tensor, y: Tensor, attack: Attack | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(x', labels, weight)``: the attack's images of ``x`` with the labels and pixel weights of ``y``."""
        if attack is None:
            raise ValueError(f"objective={self.name} needs the attack training_attack() returned")
        labels, weight = valid_pixels(y, self.ignore_index)
        return attacked(attack, model, x, labels, None if weight is None else weight.bool()), labels, weight
