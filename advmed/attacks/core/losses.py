"""The losses the attacks differentiate, for classification and segmentation alike.

Every loss returns one value per sample, shape ``(N,)``: a per-sample reduction keeps a
sample's gradient independent of the rest of the batch (so early stopping can drop samples
from the batch) and lets callers compare the loss on ``x`` and ``x_adv`` sample by sample.

* ``"ce"``: cross-entropy. Classification: logits ``(N, K)``, labels ``(N,)``.
  Segmentation: logits ``(N, K, H, W)``, labels ``(N, H, W)``, per-pixel cross-entropy
  averaged over the pixels that count (all, or those selected by the call-time ``mask``
  and/or by ``loss_classes``: only pixels whose true label is in the list).
* ``"dice"``: soft Dice loss ``1 - mean_c dice_c`` on softmax probabilities (Milletari et
  al. 2016, V-Net), segmentation only, averaged over ``loss_classes`` (all classes when
  None). Here ``loss_classes`` selects classes, not pixels: a pixel of another class
  wrongly predicted as one of them is a false positive that must still lower its Dice.
  The call-time ``mask`` restricts the pixels.

Targeted attacks ascend ``-loss(logits, target)``, i.e. they pull the prediction toward
the target labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("ce", "dice")
# Laplace smoothing of the soft Dice: keeps it defined for classes absent from an image.
DICE_SMOOTH = 1.0


def per_sample_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """Mean over all but the first dim, over the positions where ``weight`` is set."""
    if values.ndim == 1:
        return values if weight is None else values * weight
    n = values.shape[0]
    if weight is None:
        return values.reshape(n, -1).mean(1)
    # A sample with no position selected gets loss 0, hence gradient 0: it is left alone.
    return (values * weight).reshape(n, -1).sum(1) / weight.reshape(n, -1).sum(1).clamp_min(1)


def cross_entropy(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-sample cross-entropy ``(N,)``; per-pixel CE averaged over weighted pixels for segmentation."""
    # float32 even under autocast: the loss and its softmax are where half precision hurts.
    return per_sample_mean(F.cross_entropy(logits.float(), labels, reduction="none"), weight)


def soft_dice_loss(
    logits: Tensor,
    labels: Tensor,
    weight: Tensor | None = None,
    classes: Sequence[int] | None = None,
) -> Tensor:
    """Per-sample soft Dice loss ``(N,)`` of segmentation logits ``(N, K, H, W)``."""
    probs = logits.float().softmax(1)
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    if weight is not None:
        probs = probs * weight.unsqueeze(1)
        onehot = onehot * weight.unsqueeze(1)
    dims = tuple(range(2, logits.ndim))
    overlap = (probs * onehot).sum(dims)
    sizes = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * overlap + DICE_SMOOTH) / (sizes + DICE_SMOOTH)
    if classes is not None:
        dice = dice[:, list(classes)]
    return 1 - dice.mean(1)


class AttackObjective:
    """The per-sample quantity an attack ascends, built from the loss settings of its config.

    Args:
        loss: ``"ce"`` or ``"dice"`` (see the module docstring).
        targeted: ascend ``-loss(logits, target)`` instead of ``loss(logits, y)``.
        loss_classes: restrict the loss to these classes (``"ce"``: pixels whose true label
            is in the list; ``"dice"``: Dice averaged over these classes).
    """

    def __init__(
        self, loss: str = "ce", *, targeted: bool = False, loss_classes: Sequence[int] | None = None
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.targeted = targeted
        self.loss_classes = loss_classes

    def pixel_weight(self, y: Tensor, mask: Tensor | None) -> Tensor | None:
        """0/1 float weight of the positions (pixels) that count, shaped like ``y``; None = all."""
        keep = mask
        if self.loss == "ce" and self.loss_classes is not None:
            in_classes = torch.isin(y, torch.tensor(self.loss_classes, device=y.device))
            keep = in_classes if keep is None else keep & in_classes
        return None if keep is None else keep.float()

    def __call__(self, logits: Tensor, labels: Tensor, weight: Tensor | None, step: int = 0) -> Tensor:
        """Objective ``(N,)`` to ascend; ``labels`` are ``y`` (untargeted) or the target labels.

        ``step`` is the 0-based iteration of an iterative attack (0 for single-step ones). These
        losses ignore it; it is there for objectives that change over the iterations (SegPGD's
        schedule, :mod:`advmed.attacks.segpgd`), which subclass this one.
        """
        if self.loss == "ce":
            value = cross_entropy(logits, labels, weight)
        else:
            value = soft_dice_loss(logits, labels, weight, self.loss_classes)
        return -value if self.targeted else value
