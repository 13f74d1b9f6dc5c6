"""TRADES (Zhang et al., ICML 2019): natural loss plus beta times the KL between the clean and the
adversarial prediction, x' maximising that KL."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.attacks.core.model_mode import eval_mode
from advmed.objectives.base import Criterion, Objective, ObjectiveOutput
from advmed.objectives.divergences import kl_divergence, valid_pixels
from advmed.objectives.inner import input_gradient, project
from advmed.objectives.validation import check_beta, check_optional_unit, check_steps, check_unit

log = logging.getLogger(__name__)


class TRADES(Objective):
    """TRADES (Zhang et al. 2019, "Theoretically principled trade-off between robustness and
    accuracy"): the TRADES objective in its multi-class form (Sec. 4, ``beta = 1 / lambda``), as
    the authors train it (Algorithm 1)::

        loss = criterion(f(x), y) + beta * KL(p(x) || p(x'))
        x'   = argmax_{||x' - x||_inf <= eps} KL(p(x) || p(x'))

    The inner max is Algorithm 1's: ``x' = x + init_std * N(0, I)``, then ``steps`` sign steps of
    ``alpha`` on the KL, each projected onto the eps-ball and [0, 1], with the model in eval mode
    (batch-norm statistics untouched, ``p(x)`` taken once in eval mode) and gradients w.r.t. x' only.
    The objective makes x' itself (no generic attack ascends this KL), so a configured
    ``attack@train_attack`` is refused rather than silently unused.

    The natural term is the model's own loss (cross-entropy, the paper's surrogate; a segmenter's
    ``model.loss``), so ``beta = 0`` is standard training in loss and gradient. For segmentation the
    KL is per pixel, averaged over the pixels that count (``ignore_index``) per image, then over the
    batch. Logged terms: ``natural_loss``, ``robust_loss`` (the KL, before beta). ``train/acc`` is on
    the clean batch.

    Args:
        beta: weight of the KL term, >= 0 (the paper's 1 / lambda; 6 on CIFAR-10).
        eps: L-inf budget of x' in [0, 1] (the paper's CIFAR-10 value 0.031 = 8/255).
        alpha: step size in [0, 1]; None: ``2.5 * eps / steps`` (0.00775 for the defaults, the paper
            uses 0.007).
        steps: inner iterations (the paper's 10).
        init_std: standard deviation of the Gaussian start (the paper's 0.001).
        ignore_index: see :class:`~advmed.objectives.base.Objective`.
    """

    name = "trades"

    def __init__(
        self,
        beta: float = 6.0,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        init_std: float = 0.001,
        *,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        self.beta = check_beta(beta)
        self.eps = check_unit("eps", eps)
        self.steps = check_steps(steps)
        alpha = check_optional_unit("alpha", alpha)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else alpha
        self.init_std = check_unit("init_std", init_std)

    def training_attack(self, train_attack: Attack | None) -> None:
        if train_attack is not None:
            raise ValueError(
                f"objective=trades makes its own x' (the KL ascent of Zhang et al.'s Algorithm 1, set by "
                f"objective.eps/alpha/steps), so attack@train_attack ({type(train_attack).__name__}) would go unused: "
                "drop it (attack@train_attack=none), or use objective=pgd_at or mart to train against it"
            )
        log.info(
            "objective=trades: x' from its own inner attack, %d sign steps of %.4g ascending KL(p(x) || p(x')) in "
            "the L-inf ball of %.4g from x + %g * N(0, 1), model in eval mode", self.steps, self.alpha, self.eps,
            self.init_std,
        )
        return None

    def perturb(self, model: nn.Module, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """x' of Algorithm 1 (detached, the dtype of ``x``), the model in eval mode meanwhile."""
        x = x.detach()
        with eval_mode(model):
            with torch.no_grad():
                natural = model(x)
            x_adv = project(x + self.init_std * torch.randn_like(x), x, self.eps)
            for _ in range(self.steps):
                # Summed per-sample KLs: each sample's sign step is its own, whatever the batch.
                grad = input_gradient(model, x_adv, lambda logits: kl_divergence(natural, logits, weight).sum())
                x_adv = project(x_adv + self.alpha * grad.sign(), x, self.eps)
        return x_adv

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: Criterion, attack: Attack | None = None
    ) -> ObjectiveOutput:
        labels, weight = valid_pixels(y, self.ignore_index)
        x_adv = self.perturb(model, x, weight)
        logits = model(x)
        natural = criterion(logits, labels, weight)
        robust = kl_divergence(logits, model(x_adv), weight).mean()
        loss = natural + self.beta * robust
        return ObjectiveOutput(loss, logits, {"natural_loss": natural.detach(), "robust_loss": robust.detach()})
