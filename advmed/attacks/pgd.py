"""Projected Gradient Descent under an L-inf budget."""

from __future__ import annotations

import torch
from torch import Tensor

from advmed.attacks.core.iterative import IterativeAttack
from advmed.attacks.core.validation import check_seed


class PGD(IterativeAttack):
    """PGD with an L-inf budget (Madry et al. 2018, "Towards deep learning models resistant
    to adversarial attacks"): from a uniform random point of the eps-ball (``random_start``),
    ``steps`` iterations of ``x <- Proj(x + alpha * sign(grad))``.

    Args:
        eps: L-inf budget in [0, 1].
        alpha: step size; None: ``2.5 * eps / steps`` (Madry et al.), e.g. 2/255 for
            eps=8/255, steps=10.
        steps: iterations.
        random_start: start from ``x + U(-eps, eps)`` clipped to [0, 1].
        seed: seeds a private generator for the random start, so a call does not depend on
            (or advance) the global RNG and repeated calls start from the same point;
            None: the global RNG.
        Other keyword args: see :class:`IterativeAttack` and :class:`Attack`.

    Matches ``torchattacks.PGD`` and ART's ``ProjectedGradientDescent`` (norm=inf).
    """

    alpha_rule = 2.5

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        *,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(eps, alpha, steps, **kwargs)
        self.random_start = bool(random_start)
        self.seed = check_seed(seed)

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)

    def _start(self, x: Tensor) -> Tensor:
        if not self.random_start:
            return x
        # Drawn in the standard layout so the start does not depend on channels_last; x first
        # in the sum keeps x's layout.
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        noise.uniform_(-self.eps, self.eps, generator=self._generator(x.device))
        return torch.add(x, noise).clamp_(0, 1)

    def _step(self, x_adv: Tensor, grad: Tensor, x: Tensor) -> Tensor:
        # Clipping each coordinate to the eps-interval around x, then to [0, 1], is the
        # projection onto their intersection. Same order of operations as torchattacks;
        # in place on one fresh buffer.
        delta = torch.add(x_adv, grad.sign_(), alpha=self.alpha).sub_(x).clamp_(-self.eps, self.eps)
        return delta.add_(x).clamp_(0, 1)
