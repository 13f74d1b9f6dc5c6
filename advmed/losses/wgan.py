"""Wasserstein GAN losses (Arjovsky et al. 2017) with the gradient penalty of Gulrajani et al. 2017.

Chen et al. 2019, eq. 3: ``L_adv^gen = f_disc(I0) - f_disc(I_DV)`` and
``L_adv^disc = f_disc(I_DV) - f_disc(I0)``, averaged over the batch. With ``gp_weight > 0`` the
critic loss adds ``gp_weight * E[(||grad f_disc(x_hat)||_2 - 1)^2]`` on random interpolates
``x_hat`` of real and generated images (Gulrajani et al., eq. 3, lambda = 10); with weight
clipping instead (the original WGAN) the module clamps the critic's weights after each step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """``E[(||grad_x critic(x_hat)||_2 - 1)^2]`` with ``x_hat = e * real + (1 - e) * fake``,
    ``e ~ U[0, 1]`` per sample. Differentiable w.r.t. the critic's parameters (create_graph)."""
    e = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class WassersteinLoss:
    """The two sides of the WGAN objective.

    Args:
        gp_weight: weight of the gradient penalty in the critic loss (10 in Gulrajani et al.);
            0 for weight clipping (the module then clamps the critic's weights).
    """

    def __init__(self, gp_weight: float = 10.0) -> None:
        if gp_weight < 0:
            raise ValueError(f"gp_weight={gp_weight} must be >= 0")
        self.gp_weight = float(gp_weight)

    @staticmethod
    def generator(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        """Eq. 3, top: ``mean f_disc(I0) - mean f_disc(I_DV)`` (the generator raises its images' scores)."""
        return real_scores.mean() - fake_scores.mean()

    def critic(self, critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Eq. 3, bottom, and the gradient penalty, as named terms (their sum is the critic loss)."""
        terms = {"wasserstein": critic(fake.detach()).mean() - critic(real).mean()}
        if self.gp_weight > 0:
            terms["gradient_penalty"] = self.gp_weight * gradient_penalty(critic, real, fake, generator)
        return terms
