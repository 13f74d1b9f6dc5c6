"""FGSM with a random start (Wong et al., ICLR 2020), or N-FGSM (de Jorge et al., NeurIPS 2022):
single-step adversarial training."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.attacks.core.model_mode import eval_mode
from advmed.objectives.base import Criterion, Objective, ObjectiveOutput
from advmed.objectives.divergences import valid_pixels
from advmed.objectives.inner import input_gradient, project
from advmed.objectives.validation import check_optional_unit, check_unit

log = logging.getLogger(__name__)

VARIANTS = ("rs", "n_fgsm")


class FGSMRS(Objective):
    """Single-step adversarial training, ``criterion(f(x'), y)`` with x' from one FGSM step from a
    random point:

    - ``variant="rs"``: FGSM-RS, "Fast is better than free" (Wong et al. 2020, Algorithm 3):
      ``delta ~ U[-eps, eps]``, ``delta <- clip_eps(delta + alpha * sign(grad))``, ``alpha = 1.25 eps``;
    - ``variant="n_fgsm"``: N-FGSM, "Make some noise" (de Jorge et al. 2022, Algorithm 1):
      ``delta ~ U[-2 eps, 2 eps]``, ``delta <- delta + alpha * sign(grad)`` with ``alpha = eps`` and
      no projection onto the eps-ball (the perturbation may reach 3 eps: the noise is what keeps
      single-step training from catastrophic overfitting).

    x' stays in [0, 1] in both (the start and the result are clipped to the image range). The step
    ascends the model's own training loss (the papers' cross-entropy; a segmenter's ``model.loss``,
    per pixel over the pixels that count), with the model in eval mode (batch-norm statistics
    untouched; the papers' code stays in train mode) and the gradient w.r.t. x' only. The objective
    makes x' itself, so a configured ``attack@train_attack`` is refused rather than silently unused.
    ``train/acc`` is on the attacked batch.

    Args:
        eps: L-inf budget in [0, 1] (8/255 in both papers).
        variant: ``rs`` or ``n_fgsm``.
        alpha: step in [0, 1]; None: the variant's (``1.25 * eps`` | ``eps``).
        noise: half-width of the uniform start in [0, 1]; None: the variant's (``eps`` | ``2 * eps``).
        ignore_index: see :class:`~advmed.objectives.base.Objective`.
    """

    name = "fgsm_rs"

    def __init__(
        self,
        eps: float = 8 / 255,
        variant: str = "rs",
        alpha: float | None = None,
        noise: float | None = None,
        *,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        if variant not in VARIANTS:
            raise ValueError(f"objective.variant={variant!r} must be one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.eps = check_unit("eps", eps)
        rs = variant == "rs"
        alpha = check_optional_unit("alpha", alpha)
        noise = check_optional_unit("noise", noise)
        self.alpha = (1.25 * self.eps if rs else self.eps) if alpha is None else alpha
        self.noise = (self.eps if rs else 2 * self.eps) if noise is None else noise
        self.clip = rs  # N-FGSM leaves the perturbation unprojected

    def training_attack(self, train_attack: Attack | None) -> None:
        if train_attack is not None:
            raise ValueError(
                f"objective=fgsm_rs makes its own x' (one FGSM step from a random start, set by objective.eps/alpha/"
                f"noise), so attack@train_attack ({type(train_attack).__name__}) would go unused: drop it "
                "(attack@train_attack=none), or use objective=pgd_at to train against it"
            )
        log.info(
            "objective=fgsm_rs (%s): x' from its own inner attack, one sign step of %.4g on the training loss from "
            "x + U[-%.4g, %.4g]%s, model in eval mode", self.variant, self.alpha, self.noise, self.noise,
            f", clipped to the L-inf ball of {self.eps:.4g}" if self.clip else ", not projected (N-FGSM)",
        )
        return None

    def perturb(self, model: nn.Module, x: Tensor, labels: Tensor, criterion: Criterion,
                weight: Tensor | None = None) -> Tensor:
        """x' (detached, the dtype of ``x``), the model in eval mode meanwhile."""
        x = x.detach()
        start = torch.empty_like(x).uniform_(-self.noise, self.noise).add_(x).clamp_(0, 1)
        with eval_mode(model):
            grad = input_gradient(model, start, lambda logits: criterion(logits, labels, weight))
        x_adv = start + self.alpha * grad.sign()
        return project(x_adv, x, self.eps) if self.clip else x_adv.clamp_(0, 1)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: Criterion, attack: Attack | None = None
    ) -> ObjectiveOutput:
        labels, weight = valid_pixels(y, self.ignore_index)
        logits = model(self.perturb(model, x, labels, criterion, weight))
        return ObjectiveOutput(criterion(logits, labels, weight), logits)
