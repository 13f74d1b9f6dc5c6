"""MART (Wang et al., ICLR 2020): boosted cross-entropy on x' plus a KL that weighs misclassified
samples most."""

from __future__ import annotations

from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.objectives.against_attack import AgainstAttack
from advmed.objectives.base import Criterion, ObjectiveOutput
from advmed.objectives.divergences import boosted_cross_entropy, misclassification_weighted_kl
from advmed.objectives.validation import check_beta


class MART(AgainstAttack):
    """MART (Wang et al. 2020, "Improving adversarial robustness requires revisiting misclassified
    examples"), the objective of eq. 8::

        loss = BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x))
        BCE  = -log p_y(x') - log(1 - max_{k != y} p_k(x'))

    averaged over the batch, x' from PGD on the cross-entropy: ``attack@train_attack`` (PGD, or
    SegPGD for a segmenter), or, when none is configured, ``PGD(eps, alpha, steps)`` built from the
    objective's settings (one log line says so; it starts from a uniform point of the ball where the
    authors' code starts from ``x + 0.001 * N(0, 1)``). The attack runs the model in eval mode and
    leaves no parameter gradients.

    Both terms are cross-entropy based, as in the paper, so a segmenter's ``model.loss`` does not
    enter. The weight ``1 - p_y(x)`` is differentiable (part of the objective, not a constant), and
    vanishes on samples the model classifies with confidence. For segmentation every term is per
    pixel, averaged over the pixels that count (``ignore_index``) per image, then over the batch.
    Logged terms: ``adversarial_loss`` (the BCE), ``robust_loss`` (the weighted KL, before beta).
    ``train/acc`` is on the attacked batch, the images the BCE trains on.

    Args:
        beta: weight of the KL term, >= 0 (the paper's lambda; 6 in the authors' code).
        eps, alpha, steps: the default PGD's L-inf budget, step (None: ``2.5 * eps / steps``) and
            iterations; used only when ``attack@train_attack=none``.
        ignore_index: see :class:`~advmed.objectives.base.Objective`.
    """

    name = "mart"

    def __init__(
        self,
        beta: float = 6.0,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        *,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(eps, alpha, steps, ignore_index=ignore_index)
        self.beta = check_beta(beta)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: Criterion, attack: Attack | None = None
    ) -> ObjectiveOutput:
        x_adv, labels, weight = self.attacked_batch(model, x, y, attack)
        logits = model(x)
        adv_logits = model(x_adv)
        adversarial = boosted_cross_entropy(adv_logits, labels, weight).mean()
        robust = misclassification_weighted_kl(logits, adv_logits, labels, weight).mean()
        loss = adversarial + self.beta * robust
        return ObjectiveOutput(loss, adv_logits, {"adversarial_loss": adversarial.detach(), "robust_loss": robust.detach()})
