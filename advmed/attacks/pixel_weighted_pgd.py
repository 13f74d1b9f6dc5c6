"""Base of the PGD attacks that reweight the per-pixel cross-entropy at every step from the current
prediction (SegPGD, CosPGD): what they share, their constructor and its check."""

from __future__ import annotations

from typing import ClassVar

from advmed.attacks.core.losses import AttackObjective
from advmed.attacks.pgd import PGD


class PixelWeightedPGD(PGD):
    """L-inf PGD (its arguments) whose objective is a per-pixel cross-entropy with weights that the
    subclass computes from the logits of each step (:meth:`_objective`). ``loss`` must be ``"ce"``:
    the weighting is defined on it. A subclass states its verb (``WEIGHTING``) and paper (``PAPER``)
    for the message."""

    WEIGHTING: ClassVar[str]
    PAPER: ClassVar[str]

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        **kwargs,
    ):
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
