"""SegPGD: PGD whose per-pixel cross-entropy is reweighted between correctly and wrongly
classified pixels as the iterations go (Gu et al., ECCV 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from advmed.attacks.core.losses import AttackObjective, per_sample_mean
from advmed.attacks.pixel_weighted_pgd import PixelWeightedPGD


def segpgd_lambda(step: int, steps: int) -> float:
    """lambda_t = t / (2T) for the 0-based iteration t of T: the paper's (t - 1) / (2T) with
    t = 1..T. Rises from 0 to (T - 1) / (2T) < 1/2, so correct pixels always weigh more."""
    return step / (2 * steps)


def segpgd_weight(logits: Tensor, labels: Tensor, step: int, steps: int, targeted: bool = False) -> Tensor:
    """Per-position SegPGD weight, shaped like ``labels``: ``1 - lambda_t`` where the attack has
    not yet succeeded and ``lambda_t`` where it has (untargeted: the prediction is still the
    label / already wrong; targeted: the prediction is not yet / already the target).

    The weight is a constant of the step (no gradient flows through the argmax).
    """
    lam = segpgd_lambda(step, steps)
    hit = logits.detach().argmax(1) == labels
    # Untargeted, a hit (correct pixel) is not yet fooled; targeted, a hit has reached the target.
    done = hit if targeted else ~hit
    return torch.where(done, lam, 1.0 - lam).float()


class SegPGDObjective(AttackObjective):
    """SegPGD's loss (Gu et al. 2022, Sec. 3 and Alg. 1):
    ``L_t = 1/|P| * [(1 - lambda_t) * sum_{correct} CE + lambda_t * sum_{wrong} CE]``, ``P`` the
    pixels that count (the call-time ``mask`` and ``loss_classes``). Per sample, ``(N,)``."""

    def __init__(self, steps: int, *, targeted: bool = False, loss_classes: Sequence[int] | None = None):
        super().__init__("ce", targeted=targeted, loss_classes=loss_classes)
        self.steps = steps

    def __call__(self, logits: Tensor, labels: Tensor, weight: Tensor | None, step: int = 0) -> Tensor:
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        scaled = ce * segpgd_weight(logits, labels, step, self.steps, self.targeted)
        # Divided by the number of counted pixels, not by the sum of the SegPGD weights (paper:
        # 1 / (H * W)): lambda_t scales the two groups against each other, not the loss as a whole.
        value = per_sample_mean(scaled, weight)
        return -value if self.targeted else value


class SegPGD(PixelWeightedPGD):
    """SegPGD (Gu et al., ECCV 2022, "SegPGD: An Effective and Efficient Adversarial Attack for
    Evaluating and Boosting Segmentation Robustness"): PGD (L-inf, or L2 with ``norm="L2"``) on
    a per-pixel cross-entropy that weighs correctly classified pixels by ``1 - lambda_t`` and
    misclassified ones by ``lambda_t``, ``lambda_t = t / (2T)`` at iteration ``t = 0..T-1``
    (paper Sec. 3 and Alg. 1, which count ``t = 1..T`` and write ``(t - 1) / (2T)``). Early
    steps push the pixels that are still right; later ones also keep the fooled pixels fooled, instead of piling up loss
    on pixels that are already wrong, which plain PGD's mean CE rewards most (the CE of a
    wrong pixel grows without bound).

    The weights are recomputed at every step from the prediction on the current iterate and
    are constants of that step (no gradient through them). The loss is averaged over the
    pixels that count: all, or those of the call-time ``mask`` and of ``loss_classes`` (an
    ignore label: pass ``mask=y != ignore_index`` and any valid class in those pixels, see
    the example).

    Targeted (``targeted=True``): pixels already predicted as the target get ``lambda_t``, the
    others ``1 - lambda_t``, and the attack descends the weighted CE to the target (as the
    authors' public code does).

    Classification (``y`` of shape ``(N,)``): each image is one "pixel". The weight is then a
    per-image positive scale, which the sign step (L2: the normalised gradient) removes, so
    SegPGD is PGD (PGD-L2) except that at ``t = 0`` (``lambda_0 = 0``) an image already
    misclassified at the start gets no gradient and keeps its start point for that step. Meant
    for segmentation; this is the documented degenerate case, not an error.

    Under an L2 budget (``norm="L2"``) each step is PGD-L2's,
    ``x <- Proj(x + alpha * g / ||g||_2)``, on the same weighted loss (the paper runs L-inf; the
    weighting does not depend on the budget).

    Args:
        eps: budget; L-inf: in [0, 1]; L2: a radius >= 0 in [0, 1]-pixel units over (C, H, W).
        alpha: step size; None: PGD's ``2.5 * eps / steps``, so overriding ``eps`` or ``steps``
            alone keeps a sensible step; set it explicitly to reproduce a paper's setting.
        steps: iterations ``T``; the schedule lambda_t depends on it.
        random_start: L-inf: start from ``x + U(-eps, eps)``, as PGD; L2: from a random direction
            at a uniform radius in [0, eps], as PGD-L2; clipped to [0, 1].
        norm: ``"Linf"`` or ``"L2"`` (case-insensitive; stored as ``"linf"`` / ``"l2"``).
        seed: seeds the random start (see :class:`PGD`).
        Other keyword args: see :class:`IterativeAttack` and :class:`Attack`; ``loss`` must be
            ``"ce"`` (SegPGD defines its own weighted cross-entropy).

    Examples::

        attack = SegPGD(eps=8 / 255, alpha=2 / 255, steps=20)
        x_adv = attack(unet, x, y)                      # y: (N, H, W)
        x_adv = SegPGD(eps=1.0, steps=20, norm="L2")(unet, x, y)
        ignored = y == 255                              # an ignore label kept out of the loss
        x_adv = attack(unet, x, y.masked_fill(ignored, 0), mask=~ignored)
    """

    WEIGHTING = "weights"
    PAPER = "Gu et al. 2022"

    def _objective(self) -> SegPGDObjective:
        return SegPGDObjective(self.steps, targeted=self.targeted, loss_classes=self.loss_classes)
