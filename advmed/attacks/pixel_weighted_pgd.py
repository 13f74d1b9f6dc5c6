"""Base of the PGD attacks that reweight the per-pixel cross-entropy at every step from the current
prediction (SegPGD, CosPGD): what they share, their constructor and its check, and the choice of
budget (L-inf: PGD's step; L2: PGD-L2's)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from advmed.attacks.core.losses import AttackObjective
from advmed.attacks.pgd import PGD
from advmed.attacks.pgd_l2 import PGDL2

NORMS = ("linf", "l2")


class PixelWeightedPGD(PGD):
    """PGD (its arguments) whose objective is a per-pixel cross-entropy with weights that the
    subclass computes from the logits of each step (:meth:`_objective`). ``loss`` must be ``"ce"``:
    the weighting is defined on it. A subclass states its verb (``WEIGHTING``) and paper (``PAPER``)
    for the message.

    ``norm`` picks the budget: ``"Linf"`` runs :class:`~advmed.attacks.pgd.PGD`'s sign step and
    uniform random start, ``"L2"`` :class:`~advmed.attacks.pgd_l2.PGDL2`'s normalised-gradient
    step, projection onto the L2 ball and random start (their own methods, called on this
    attack: the weighting only changes the objective, so nothing else differs). The default
    step ``alpha = 2.5 * eps / steps`` is the same rule for both.
    """

    WEIGHTING: ClassVar[str]
    PAPER: ClassVar[str]

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        *,
        norm: str = "Linf",
        **kwargs,
    ):
        norm_name = str(norm).lower()
        if norm_name not in NORMS:
            raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
        # Set before the base checks eps: L-inf in [0, 1], L2 any radius >= 0 (as APGD).
        self.norm = norm_name
        self._eps_upper = None if norm_name == "l2" else 1.0
        super().__init__(eps, alpha, steps, random_start, **kwargs)
        if self.loss != "ce":
            raise ValueError(
                f"{type(self).__name__} {self.WEIGHTING} the per-pixel cross-entropy ({self.PAPER}): "
                f"loss must be 'ce', got {self.loss!r}"
            )
        self.objective = self._objective()

    def _objective(self) -> AttackObjective:
        """The step-dependent objective the loop differentiates (see ``AttackObjective.__call__``'s ``step``)."""
        raise NotImplementedError

    def _start(self, x: Tensor) -> Tensor:
        return PGDL2._start(self, x) if self.norm == "l2" else super()._start(x)

    def _step(self, x_adv: Tensor, grad: Tensor, x: Tensor) -> Tensor:
        if self.norm == "l2":
            return PGDL2._step(self, x_adv, grad, x)
        return super()._step(x_adv, grad, x)
