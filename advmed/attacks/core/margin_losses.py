"""The logit-margin losses of AutoAttack's attacks (Croce & Hein, ICML 2020), per sample: the
Difference of Logits Ratio (eq. 5), its targeted form (eq. 6), the plain margin and targeted CE
that stand in for them with too few classes, and the target classes of the targeted attacks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

_FLOOR = 1e-12  # keeps the DLR denominators away from 0 when the top logits tie


def _true_logit(z: Tensor, y: Tensor) -> Tensor:
    return z.gather(1, y.unsqueeze(1)).squeeze(1)


def _best_other_logit(z: Tensor, y: Tensor) -> Tensor:
    """``max_{i != y} z_i`` per row."""
    return z.scatter(1, y.unsqueeze(1), float("-inf")).amax(1)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted Difference of Logits Ratio (paper eq. 5), per sample:
    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, ``pi`` sorting the logits in decreasing
    order. Invariant to shifting and rescaling the logits; needs K >= 3 classes."""
    z = logits.float()
    top = z.topk(3, dim=1).values
    return -(_true_logit(z, y) - _best_other_logit(z, y)) / (top[:, 0] - top[:, 2] + _FLOOR)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR (paper eq. 6), per sample: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``;
    needs K >= 4 classes."""
    z = logits.float()
    top = z.topk(4, dim=1).values
    return -(_true_logit(z, y) - _true_logit(z, target)) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _FLOOR)


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{i != y} z_i - z_y`` (the DLR numerator, Carlini & Wagner's margin): what replaces
    DLR below 3 classes."""
    z = logits.float()
    return _best_other_logit(z, y) - _true_logit(z, y)


def targeted_ce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """``-CE(z, t)``: what replaces targeted DLR below 4 classes (the original's ``ce-targeted``)."""
    return -F.cross_entropy(logits.float(), target, reduction="none")


def target_classes(logits: Tensor, n: int) -> Tensor:
    """APGD-T's targets ``(N, min(n, K - 1))``: column ``j`` holds each sample's ``(j + 2)``-th
    most likely class under ``logits`` (the clean input's), so the first run aims at the
    runner-up class."""
    ranked = logits.float().argsort(1, descending=True)
    return ranked[:, 1 : min(n, logits.shape[1] - 1) + 1]


# The fewest classes each DLR loss is defined for (it reads the 3rd or 4th largest logit), and
# what stands in for it below that: the reference only warns; advmed substitutes and says so.
FEW_CLASS_STAND_INS: dict[str, tuple[int, str]] = {"dlr": (3, "margin"), "dlr-targeted": (4, "ce-targeted")}


def loss_for_classes(loss: str, num_classes: int) -> str:
    """The loss an attack asked for ``loss`` ascends on a model with ``num_classes`` classes:
    ``loss`` itself, or its stand-in from :data:`FEW_CLASS_STAND_INS` when it is undefined there."""
    fewest, stand_in = FEW_CLASS_STAND_INS.get(loss, (0, loss))
    return stand_in if num_classes < fewest else loss
