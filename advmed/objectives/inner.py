"""The inner maximisations' shared steps: the eval-mode input gradient, the projection onto the
L-inf ball and [0, 1], and a call of the configured training attack.

TRADES's KL ascent and FGSM-RS's single step ascend losses the generic attacks do not have (a
divergence from the clean prediction; the model's own training loss), so they are written with
these pieces; PGD-AT and MART call the training attack (:mod:`advmed.attacks`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.attacks.pgd import PGD

log = logging.getLogger(__name__)


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """``x_adv`` clipped to the L-inf ball of radius ``eps`` around ``x``, then to [0, 1]: the
    projection onto their intersection (coordinate-wise)."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)


def input_gradient(model: nn.Module, x_adv: Tensor, loss: Callable[[Tensor], Tensor]) -> Tensor:
    """The gradient of ``loss(model(x_adv))`` (a scalar) w.r.t. ``x_adv`` only: autograd skips
    every parameter, so no ``.grad`` is written. The caller puts the model in eval mode."""
    leaf = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(model(leaf)), leaf)
    return grad


def default_pgd(objective: str, eps: float, alpha: float | None, steps: int) -> PGD:
    """The PGD an objective trains against when ``attack@train_attack=none``, with one log line saying so."""
    attack = PGD(eps=eps, alpha=alpha, steps=steps)
    log.warning(
        "objective=%s: attack@train_attack is none, so it trains against PGD(eps=%.4g, alpha=%.4g, steps=%d, random start) "
        "built from objective.eps/alpha/steps; choose another with attack@train_attack=pgd (or segpgd, fgsm, ...)",
        objective, attack.eps, attack.alpha, attack.steps,
    )
    return attack


def attacked(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """``attack``'s images of ``x`` (through its ``__call__``, as training always called it).

    A batch holding a NaN or inf pixel is returned as it is: the attack would refuse it with a
    ValueError, while the loss it makes is not finite, which ``nonfinite_loss`` handles (stop
    naming the step, or skip the batch).
    """
    if not bool(torch.isfinite(x).all()):
        return x
    result = attack(model, x, y) if mask is None else attack(model, x, y, mask=mask)
    return result[0] if isinstance(result, tuple) else result  # an attack built with trace=true
