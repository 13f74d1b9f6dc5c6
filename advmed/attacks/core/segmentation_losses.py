"""The per-pixel losses of SEA (Croce, Singh & Hein, ECCV 2024, "Towards reliable evaluation and
fast training of robust semantic segmentation models": L_MCE, L_MCE-Bal, L_JS), per sample, and the per-image
scores SEA selects its results by (pixel accuracy, per-class intersection and union).

Each loss is computed per pixel of segmentation logits ``(N, K, H, W)`` against labels
``(N, H, W)`` and averaged, per image, over the pixels that count (the call-time ``mask``:
advmed's ignore mechanism), so an image's value never depends on the rest of the batch:

* ``"mask-ce"`` (L_MCE): cross-entropy of the pixels the model still classifies correctly, 0
  on the others. Plain CE grows without bound on pixels already wrong and steers the attack
  there; masking moves the whole budget onto the pixels still right. The mask is a constant of
  the step (computed from the current prediction, no gradient through it), as the reference.
* ``"mask-ce-bal"`` (L_MCE-Bal): the same, each pixel weighted by a weight of its true class,
  so small classes (which weigh in mIoU as much as large ones) are attacked as hard as large
  ones. The reference uses fixed per-class weights of the dataset (inverse class frequencies
  over the validation set, summing to 1: ``class_weights``); without them advmed weights each
  image's classes by their inverse frequency in that image, normalised to sum 1 over the
  classes present (:func:`balanced_pixel_weights`) — an attack never sees the dataset.
* ``"js"`` (L_JS): the Jensen-Shannon divergence between the softmax ``p`` and the one-hot
  label ``q``, ``JS = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``, natural log.
  It depends only on ``p_y`` (closed form in :func:`js_divergence`); it is bounded by ``ln 2``,
  so pixels already wrong stop adding to the loss, without a hard mask.

Written by hand: no library provides these attack losses (the reference code,
``nmndeep/Robust-Segmentation``, ``semseg/attacker.py``, is a research script).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from advmed.attacks.core.losses import per_sample_mean

SEA_LOSSES = ("mask-ce-bal", "mask-ce", "js")
_LN2 = math.log(2.0)


def _class_counts(labels: Tensor, keep: Tensor | None, num_classes: int) -> Tensor:
    """Per image and class, the number of pixels with that label among those ``keep`` (0/1 or
    bool, shaped like ``labels``; all when None) selects: ``(N, K)`` float. One ``bincount`` for
    the batch, no one-hot ``(N, K, H, W)`` tensor (ADE20K has 150 classes); without bincount's
    ``weights``, which CUDA implements with float atomics (refused under deterministic mode)."""
    n = labels.shape[0]
    cells = (torch.arange(n, device=labels.device).unsqueeze(1) * num_classes + labels.reshape(n, -1)).reshape(-1)
    if keep is not None:
        cells = cells[keep.reshape(-1) > 0]
    return torch.bincount(cells, minlength=n * num_classes).view(n, num_classes).float()


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per pixel ``(N, H, W)``: the cross-entropy where ``argmax(logits) == labels``, 0 elsewhere."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    right = logits.detach().argmax(1) == labels
    return ce * right


def js_divergence(logits: Tensor, labels: Tensor) -> Tensor:
    """Per pixel ``(N, H, W)``: JS divergence of ``softmax(logits)`` and ``onehot(labels)``.

    With ``q`` one-hot at ``y`` and ``p = p_y``: ``KL(q || m) = -log((1 + p) / 2)`` and
    ``KL(p || m) = p log(2p / (1 + p)) + (1 - p) log 2`` (every other class has ``m_c = p_c / 2``),
    so ``JS = (p (log 2 + log p - log(1 + p)) + (1 - p) log 2 + log 2 - log(1 + p)) / 2``. Written
    with ``log p`` from ``log_softmax``: finite, with a finite gradient, even where ``p``
    underflows to 0 (the reference's ``m.log()`` is ``-inf`` there).
    """
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    p = log_p.exp()
    log1p_p = torch.log1p(p)
    return 0.5 * (p * (_LN2 + log_p - log1p_p) + (1 - p) * _LN2 + _LN2 - log1p_p)


def balanced_pixel_weights(
    labels: Tensor,
    weight: Tensor | None,
    num_classes: int,
    class_weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """The per-pixel weight of ``"mask-ce-bal"``, shaped like ``labels``: ``class_weights[y]``
    when given (the reference's dataset weights); else, per image, ``(1 / n_c) / sum_c' (1 / n_c')``
    for a pixel of class ``c``, ``n_c`` its number of pixels in that image (among those
    ``weight`` selects), the sum over the classes present."""
    if class_weights is not None:
        table = torch.as_tensor(class_weights, dtype=torch.float32, device=labels.device)
        return table[labels]
    counts = _class_counts(labels, weight, num_classes)
    inverse = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    table = inverse / inverse.sum(1, keepdim=True).clamp_min(1e-12)
    return table.gather(1, labels.reshape(labels.shape[0], -1)).view_as(labels)


def sea_loss(
    name: str,
    logits: Tensor,
    labels: Tensor,
    weight: Tensor | None = None,
    pixel_weight: Tensor | None = None,
) -> Tensor:
    """Per-sample SEA loss ``(N,)``: the per-pixel loss ``name`` (one of :data:`SEA_LOSSES`)
    averaged over the pixels ``weight`` selects (all when None). ``pixel_weight`` (shaped like
    ``labels``, from :func:`balanced_pixel_weights`) scales ``"mask-ce-bal"``'s pixels."""
    if name == "js":
        values = js_divergence(logits, labels)
    elif name in ("mask-ce", "mask-ce-bal"):
        values = masked_cross_entropy(logits, labels)
        if name == "mask-ce-bal":
            if pixel_weight is None:
                raise ValueError("loss 'mask-ce-bal' needs the pixel weights (balanced_pixel_weights)")
            values = values * pixel_weight
    else:
        raise ValueError(f"SEA loss must be one of {SEA_LOSSES}, got {name!r}")
    return per_sample_mean(values, weight)


def pixel_accuracy(pred: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per image ``(N,)``: the fraction of the pixels ``weight`` selects (all when None) whose
    prediction is the label; 0 for an image with no such pixel."""
    return per_sample_mean((pred == labels).float(), weight)


def class_overlaps(pred: Tensor, labels: Tensor, weight: Tensor | None, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per image and class ``(N, K)``: the intersection and the union of the predicted and the
    true pixels of the class, among the pixels ``weight`` selects (all when None). Summed over
    images they give a dataset's IoU per class; what SEA's mIoU selection works on."""
    hit = pred == labels if weight is None else (pred == labels) & (weight > 0)
    inter = _class_counts(labels, hit, num_classes)
    union = _class_counts(labels, weight, num_classes) + _class_counts(pred, weight, num_classes) - inter
    return inter, union
