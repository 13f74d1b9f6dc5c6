"""StyleGAN2 losses (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"):
the non-saturating logistic GAN loss, R1 on real images and path-length regularisation.

Lockshin et al. 2022, eq. 1: ``l_GAN = E_x log D(x) + E_z log(1 - D(G(z)))``, maximised by D,
minimised by G. With ``D = sigmoid(logit)``, ``-log D = softplus(-logit)`` and ``-log(1 - D) =
softplus(logit)``; the generator uses the non-saturating form ``-log D(G(z))`` (Goodfellow et al.
2014, sec. 3), as StyleGAN2 does, because ``log(1 - D(G(z)))`` has vanishing gradients while D wins.

Every method returns named scalar terms, already weighted, ready for
:class:`~advmed.models.gan.GANModule`'s hooks; :class:`R1Penalty` and :class:`PathLengthPenalty`
are the lazy ``critic_regularizer`` / ``generator_regularizer`` (the interval scaling is the
base's). Both compute in float32 with autocast off: second-order gradients in bf16 are too coarse.

Pixel units: our images are in [0, 1], StyleGAN2's in [-1, 1] (``x_paper = 2 x - 1``). So that
``gamma`` and ``pl_weight`` keep the paper's values and meaning, both take ``pixel_scale = 2``
(the paper's pixel units per unit of ours): R1's gradient is divided by it and the path length's
random image multiplied by it. ``pixel_scale=1`` gives the formulas in our own units.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"model.{name}={value} must be {rule}")


class NonSaturatingLoss:
    """The logistic GAN loss of Lockshin et al. eq. 1 (Goodfellow et al. 2014) on discriminator logits."""

    @staticmethod
    def generator(fake_logits: Tensor) -> dict[str, Tensor]:
        """``{"adversarial": mean softplus(-D(G(z)))}`` = ``-E log sigmoid(D(G(z)))`` (non-saturating)."""
        return {"adversarial": F.softplus(-fake_logits.float()).mean()}

    @staticmethod
    def critic(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """``-l_GAN`` of eq. 1 as ``{"real": mean softplus(-D(x)), "fake": mean softplus(D(G(z)))}``."""
        return {"real": F.softplus(-real_logits.float()).mean(), "fake": F.softplus(fake_logits.float()).mean()}


def r1_squared_gradient_norms(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """``||grad_x critic(x)||^2`` per real image (N,), in float32 with autocast off, differentiable
    w.r.t. the critic's parameters (create_graph)."""
    with torch.autocast(device_type=real.device.type, enabled=False):
        x = real.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).float().sum(), x, create_graph=True)
    return grad.square().flatten(1).sum(1)


class R1Penalty:
    """R1 regularisation (Mescheder et al. 2018, eq. 9; StyleGAN2 sec. 2 and appendix B):
    ``(gamma / 2) E_x ||grad_x D(x)||^2`` on real images, which keeps D from growing steep on the
    data manifold. Lazy (every 16 critic steps in StyleGAN2) via the base's ``critic_reg_interval``.

    Args:
        gamma: weight; 10 in config F at 1024 px. StyleGAN2-ADA's rule of thumb is
            ``0.0002 * R^2 / batch`` (0.1 at 128 px and batch 32); a config value, tune per dataset.
        pixel_scale: paper pixel units per unit of our images (2; see the module docstring): the
            gradient w.r.t. [-1, 1] pixels is ours divided by it.
    """

    def __init__(self, gamma: float = 10.0, pixel_scale: float = 2.0) -> None:
        _check("r1_gamma", gamma, math.isfinite(gamma) and gamma >= 0, "a finite number >= 0 (10 in StyleGAN2 config F)")
        _check("pixel_scale", pixel_scale, math.isfinite(pixel_scale) and pixel_scale > 0, "> 0 (2 for [0, 1] images)")
        self.gamma, self.pixel_scale = float(gamma), float(pixel_scale)

    def __call__(self, critic: Callable[[Tensor], Tensor], real: Tensor) -> dict[str, Tensor]:
        """``{"r1": ...}``; ``critic`` maps [0, 1] images to logits (bind the labels: ``lambda x: D(x, c)``)."""
        norms = r1_squared_gradient_norms(critic, real) / self.pixel_scale**2
        return {"r1": 0.5 * self.gamma * norms.mean()}


def path_lengths(synthesis: Callable[[Tensor], Tensor], ws: Tensor, pixel_scale: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """``||J_w^T y||`` per sample (N,) (StyleGAN2 eq. 4), in float32 with autocast off.

    ``y ~ N(0, I) / sqrt(H W)`` (times ``pixel_scale``) is a random image; ``J_w^T y`` is the
    gradient of ``sum(synthesis(ws) * y)`` w.r.t. ``ws``, kept in the graph (create_graph). For
    ``ws`` of shape (N, num_ws, w_dim) the length is ``sqrt(mean_layers ||g_layer||^2)``: the paper
    averages over the synthesis layers so the regulariser agrees with style mixing (sec. 3.2);
    for (N, w_dim) it is the plain norm. ``generator`` (on ws's device) seeds ``y``.
    """
    with torch.autocast(device_type=ws.device.type, enabled=False):
        if not ws.requires_grad:
            ws = ws.detach().requires_grad_(True)
        images = synthesis(ws.float()).float()
        height, width = images.shape[-2:]
        y = torch.randn(images.shape, generator=generator, device=images.device) * (pixel_scale / math.sqrt(height * width))
        (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
    return grad.float().square().sum(-1).reshape(ws.shape[0], -1).mean(1).sqrt()


class PathLengthPenalty(nn.Module):
    """Path-length regularisation (StyleGAN2 sec. 3.2, eq. 4): ``pl_weight * E (||J_w^T y|| - a)^2``
    with ``a`` the running mean of the path lengths, so that a fixed-size step in W moves the image
    by a fixed amount whatever the direction (smoother, better-conditioned generators).

    ``pl_mean`` (``a``) is a buffer: it is saved with ``state_dict`` (register this object as a
    submodule of the LightningModule and it is in the checkpoint) and moves with ``.to()``. Each
    call first updates it, ``a <- a + pl_decay (mean length - a)``, and then penalises against the
    new value (as the official code does). Under DDP every process keeps its own ``a``.

    Args:
        pl_weight: weight (2 in config F, with ``y`` scaled by ``1 / sqrt(H W)``, appendix B).
        pl_decay: EMA rate of ``a`` (0.01).
        pl_batch_shrink: the penalty runs on the first ``N // pl_batch_shrink`` ws (at least 1)
            to save memory (2 in config F).
        pixel_scale: paper pixel units per unit of our images (2; see the module docstring).
    """

    def __init__(self, pl_weight: float = 2.0, pl_decay: float = 0.01, pl_batch_shrink: int = 2,
                 pixel_scale: float = 2.0) -> None:
        super().__init__()
        _check("pl_weight", pl_weight, math.isfinite(pl_weight) and pl_weight >= 0, "a finite number >= 0 (2 in StyleGAN2 config F)")
        _check("pl_decay", pl_decay, 0 < pl_decay <= 1, "in (0, 1] (0.01 in StyleGAN2)")
        _check("pl_batch_shrink", pl_batch_shrink, isinstance(pl_batch_shrink, int) and pl_batch_shrink >= 1,
               "an integer >= 1 (2 in StyleGAN2)")
        _check("pixel_scale", pixel_scale, math.isfinite(pixel_scale) and pixel_scale > 0, "> 0 (2 for [0, 1] images)")
        self.pl_weight, self.pl_decay = float(pl_weight), float(pl_decay)
        self.pl_batch_shrink, self.pixel_scale = pl_batch_shrink, float(pixel_scale)
        self.register_buffer("pl_mean", torch.zeros(()))

    def forward(self, synthesis: Callable[[Tensor], Tensor], ws: Tensor,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"path_length": ...}`` for ``synthesis`` (ws -> [0, 1] images, e.g.
        ``StyleGAN2Generator.synthesis``) at ``ws`` (e.g. ``StyleGAN2Generator.training_ws``, kept in the graph so
        the mapping network is regularised too)."""
        ws = ws[: max(1, ws.shape[0] // self.pl_batch_shrink)]
        lengths = path_lengths(synthesis, ws, self.pixel_scale, generator)
        with torch.no_grad():
            self.pl_mean.copy_(self.pl_mean.lerp(lengths.mean().to(self.pl_mean.dtype), self.pl_decay))
        target = self.pl_mean.detach().clone()  # a later call's in-place update must not touch this graph
        return {"path_length": self.pl_weight * (lengths - target).square().mean()}
