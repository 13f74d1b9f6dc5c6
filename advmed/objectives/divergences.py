"""The terms the objectives build their losses from, for classification logits ``(N, K)`` with
labels ``(N,)`` and segmentation logits ``(N, K, H, W)`` with labels ``(N, H, W)`` alike.

Every term is computed per position (a sample, or a pixel) in float32 (half-precision softmax is
where bf16 hurts) and reduced per sample to ``(N,)``: for segmentation the mean over the pixels
that count (``weight``, a 0/1 mask from :func:`valid_pixels`; all pixels when None), the
reduction :func:`advmed.attacks.core.losses.cross_entropy` uses. A per-sample value keeps each
sample's input gradient independent of the rest of the batch (the inner maximisations take its
sign); callers average the ``(N,)`` values over the batch.

Written here because no library provides them over both layouts with an ignore mask: torch's
``kl_div`` and ``cross_entropy`` reduce over all positions, not per sample over valid pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from advmed.attacks.core.losses import per_sample_mean


def valid_pixels(y: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor | None]:
    """``(labels, weight)``: ``y`` unchanged and None when nothing is ignored; otherwise ``y`` with the
    ignored labels replaced by class 0 (any valid index: their weight is 0, so they add nothing, but
    ``cross_entropy`` and ``gather`` need an index in range) and the float mask of the other pixels."""
    if ignore_index is None:
        return y, None
    keep = y != ignore_index
    return torch.where(keep, y, torch.zeros_like(y)), keep.float()


def kl_per_position(natural_logits: Tensor, adversarial_logits: Tensor) -> Tensor:
    """``KL(p(x) || p(x')) = sum_k p_k(x) (log p_k(x) - log p_k(x'))`` at each position: ``(N,)`` or
    ``(N, H, W)``. TRADES (Zhang et al. 2019) and MART (Wang et al. 2020) both use this direction:
    the clean prediction is the reference distribution."""
    log_p = natural_logits.float().log_softmax(1)
    log_q = adversarial_logits.float().log_softmax(1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def kl_divergence(natural_logits: Tensor, adversarial_logits: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-sample ``KL(p(x) || p(x'))`` ``(N,)``; per-pixel KL averaged over the kept pixels for segmentation."""
    return per_sample_mean(kl_per_position(natural_logits, adversarial_logits), weight)


def true_class_probability(logits: Tensor, labels: Tensor) -> Tensor:
    """``p_y(x)`` at each position, ``(N,)`` or ``(N, H, W)``."""
    return logits.float().softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)


def boosted_cross_entropy(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """MART's boosted cross-entropy (Wang et al. 2020, eq. 8, the BCE term), per sample ``(N,)``:
    ``-log p_y(x') - log(1 - max_{k != y} p_k(x'))`` at each position.

    The margin term is computed as ``logsumexp_{j != k*} z_j - logsumexp_j z_j`` (``k*`` the most
    probable wrong class): exactly ``log(1 - p_{k*})``, finite even where ``p_{k*}`` rounds to 1,
    so no ``+1e-12`` fudge (the authors' code adds one) moves the value.
    """
    z = logits.float()
    log_probs = z.log_softmax(1)
    ce = -log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    true_class = torch.zeros_like(z, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), True)
    strongest_wrong = z.masked_fill(true_class, float("-inf")).argmax(1, keepdim=True)
    others = z.scatter(1, strongest_wrong, float("-inf"))
    log_one_minus = others.logsumexp(1) - z.logsumexp(1)
    return per_sample_mean(ce - log_one_minus, weight)


def misclassification_weighted_kl(
    natural_logits: Tensor, adversarial_logits: Tensor, labels: Tensor, weight: Tensor | None = None
) -> Tensor:
    """MART's regulariser (Wang et al. 2020, eq. 8, the second term), per sample ``(N,)``:
    ``KL(p(x) || p(x')) * (1 - p_y(x))`` at each position. The weight is differentiable, as in the
    paper's objective: it vanishes on confidently right positions and is largest on misclassified ones."""
    kl = kl_per_position(natural_logits, adversarial_logits)
    return per_sample_mean(kl * (1 - true_class_probability(natural_logits, labels)), weight)
