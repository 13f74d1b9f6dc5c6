"""Basic Iterative Method (I-FGSM)."""

from __future__ import annotations

from advmed.attacks.pgd import PGD


class BIM(PGD):
    """BIM / I-FGSM (Kurakin et al. 2017, "Adversarial examples in the physical world"):
    FGSM repeated ``steps`` times with step ``alpha``, clipped to the eps L-inf ball and to
    [0, 1] after every step, starting at ``x``. That is PGD without random start.

    Args:
        eps: L-inf budget in [0, 1].
        alpha: step size; None: ``1.25 * eps / steps``, the total travel of Kurakin et al.
            (step 1/255 for min(255 * eps + 4, 1.25 * 255 * eps) iterations).
        steps: iterations.
        Other keyword args: see :class:`IterativeAttack` and :class:`Attack`.

    Matches ``torchattacks.BIM``.
    """

    alpha_rule = 1.25

    def __init__(self, eps: float, alpha: float | None = None, steps: int = 10, **kwargs):
        super().__init__(eps, alpha, steps, random_start=False, seed=None, **kwargs)
