"""CosPGD: PGD whose per-pixel cross-entropy is scaled by the cosine similarity of the
prediction and the label (Agnihotri et al., ICML 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from advmed.attacks.core.losses import AttackObjective, per_sample_mean
from advmed.attacks.pixel_weighted_pgd import PixelWeightedPGD


def cospgd_weight(logits: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Per-position CosPGD weight, shaped like ``labels``: ``cos(softmax(logits), onehot(labels))``
    over the class dim (targeted: ``1 - cos``), detached.

    With a one-hot label the cosine is ``p_y / ||p||_2``: close to 1 where the model is confident
    and right, small where it is already wrong.
    """
    probs = logits.detach().float().softmax(1)
    # cos(p, e_y) = <p, e_y> / (||p|| * ||e_y||) = p_y / ||p||; ||p|| >= 1/sqrt(K) > 0, no 0/0.
    cos = probs.gather(1, labels.unsqueeze(1)).squeeze(1) / probs.norm(dim=1)
    return 1 - cos if targeted else cos


class CosPGDObjective(AttackObjective):
    """CosPGD's loss for semantic segmentation (Agnihotri et al. 2024, Alg. 1):
    ``1/|P| * sum_{i in P} cos(softmax(f(x)_i), onehot(y_i)) * CE_i``, the cosine a constant of
    the step, ``P`` the pixels that count (the call-time ``mask`` and ``loss_classes``)."""

    def __init__(self, *, targeted: bool = False, loss_classes: Sequence[int] | None = None):
        super().__init__("ce", targeted=targeted, loss_classes=loss_classes)

    def __call__(self, logits: Tensor, labels: Tensor, weight: Tensor | None, step: int = 0) -> Tensor:
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        value = per_sample_mean(ce * cospgd_weight(logits, labels, self.targeted), weight)
        return -value if self.targeted else value


class CosPGD(PixelWeightedPGD):
    """CosPGD (Agnihotri et al., ICML 2024, "CosPGD: an efficient white-box adversarial attack
    for pixel-wise prediction tasks"): PGD (L-inf, or L2 with ``norm="L2"``) on the per-pixel
    cross-entropy scaled by the cosine similarity between the model's class distribution at that
    pixel and the one-hot label, recomputed at every step on the current iterate and detached (a
    weight, not a term to differentiate). Pixels the model still gets right with confidence
    weigh close to 1; pixels already fooled weigh little, so the budget goes to the pixels that
    are not yet fooled, smoothly, instead of SegPGD's hard split.

    The variant is the paper's semantic-segmentation one: softmax of the logits against the
    one-hot label, as the authors' code does (``cospgd_scale(..., one_hot=True)`` in
    shashankskagnihotri/cospgd). An earlier version of the paper writes the distribution as
    the sigmoid of the logits; for pixel-wise regression (optical flow) the authors' code
    compares softmax(prediction) with softmax(target) instead of a one-hot label. advmed
    attacks classifiers and segmenters only.

    The loss is averaged over the pixels that count: all, or those of the call-time ``mask``
    and of ``loss_classes`` (an ignore label: pass ``mask=y != ignore_index`` and any valid
    class in those pixels, as in :class:`~advmed.attacks.segpgd.SegPGD`'s example).

    Targeted (``targeted=True``): the weight is ``1 - cos(softmax, onehot(target))`` and the attack
    descends the weighted CE to the target (as the authors' code does).

    Classification (``y`` of shape ``(N,)``): each image is one "pixel", the weight a positive
    per-image scale that the sign step (L2: the normalised gradient) removes: CosPGD is then
    exactly PGD (PGD-L2) (documented, not an error).

    The paper's L2 variant (``norm="L2"``) is PGD-L2's step on the same objective,
    ``x <- Proj(x + alpha * g / ||g||_2)`` with the projection onto the L2 ball, then [0, 1], as
    the authors' ``step_l2``. Its random start is PGD-L2's (a random direction at a uniform
    radius in [0, eps]); the authors' ``init_l2`` puts ``U(-1, 1)`` noise on the sphere of
    radius eps.

    Args:
        eps: budget; L-inf: in [0, 1]; L2: a radius >= 0 in [0, 1]-pixel units over (C, H, W).
        alpha: step size; None: PGD's ``2.5 * eps / steps``, so overriding ``eps`` or ``steps``
            alone keeps a sensible step; set it explicitly to reproduce a paper's setting (the
            authors' scripts default to eps = 0.03, alpha = 0.01).
        steps: iterations.
        random_start: L-inf: start from ``x + U(-eps, eps)`` (as the authors' code); L2: see
            above; clipped to [0, 1].
        norm: ``"Linf"`` or ``"L2"`` (case-insensitive; stored as ``"linf"`` / ``"l2"``).
        seed: seeds the random start (see :class:`PGD`).
        Other keyword args: see :class:`IterativeAttack` and :class:`Attack`; ``loss`` must be
            ``"ce"`` (CosPGD defines its own scaled cross-entropy).

    Examples::

        attack = CosPGD(eps=8 / 255, alpha=0.01, steps=20)
        x_adv = attack(unet, x, y)                      # y: (N, H, W)
        x_adv = CosPGD(eps=1.0, steps=20, norm="L2")(unet, x, y)
    """

    WEIGHTING = "scales"
    PAPER = "Agnihotri et al. 2024"

    def _objective(self) -> CosPGDObjective:
        return CosPGDObjective(targeted=self.targeted, loss_classes=self.loss_classes)
