"""Projected Gradient Descent under an L2 budget."""

from __future__ import annotations

import torch
from torch import Tensor

from advmed.attacks.pgd import PGD

# Keeps the normalised gradient finite where it vanishes (same constant as torchattacks).
_GRAD_NORM_FLOOR = 1e-10


def _per_sample_norm(t: Tensor) -> Tensor:
    # Over (C, H, W) without flattening, so channels_last tensors are not copied.
    return torch.linalg.vector_norm(t, dim=(1, 2, 3), keepdim=True)


class PGDL2(PGD):
    """PGD with an L2 budget (Madry et al. 2018): ``x <- Proj(x + alpha * g / ||g||_2)``,
    projecting the perturbation onto the L2 ball of radius ``eps`` around ``x``, then [0, 1].

    Args:
        eps: L2 radius per sample, in [0, 1]-pixel units over all of (C, H, W); any value
            >= 0 is accepted (the largest possible distance is ``sqrt(C * H * W)``), e.g.
            0.5 for 3x32x32 images or 3.0 for 3x224x224.
        alpha: step size; None: ``2.5 * eps / steps`` (Madry et al.).
        steps: iterations.
        random_start: start from a random direction scaled to a uniform radius in [0, eps]
            (as torchattacks), clipped to [0, 1].
        seed: seeds the random start (see :class:`PGD`).
        Other keyword args: see :class:`IterativeAttack` and :class:`Attack`.

    Matches ``torchattacks.PGDL2`` (ART clips to [0, 1] before projecting onto the ball, a
    different step rule).
    """

    norm = "l2"
    _eps_upper = None

    def _start(self, x: Tensor) -> Tensor:
        if not self.random_start:
            return x
        gen = self._generator(x.device)
        # Standard layout, as in PGD: the start does not depend on channels_last.
        direction = torch.empty(x.shape, dtype=x.dtype, device=x.device).normal_(generator=gen)
        radius = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(
            0, 1, generator=gen
        )
        delta = direction.mul_(radius * self.eps / _per_sample_norm(direction))
        return torch.add(x, delta).clamp_(0, 1)

    def _step(self, x_adv: Tensor, grad: Tensor, x: Tensor) -> Tensor:
        grad = grad.div_(_per_sample_norm(grad).add_(_GRAD_NORM_FLOOR))
        delta = torch.add(x_adv, grad, alpha=self.alpha).sub_(x)
        # min(1, eps / ||delta||); the floor avoids 0/0 when eps = 0 and the step is 0.
        factor = (self.eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp_(max=1)
        # Clipping to [0, 1] afterwards only moves coordinates toward x: still inside the ball.
        return delta.mul_(factor).add_(x).clamp_(0, 1)
