"""The generator objective of Chen et al. 2019 (eqs. 2, 4-6) for the deformation + intensity attack.

``L_gen = L_adv^gen + (xi - f_xent^M(S0, S_DV))^2 + lambda_D ||D||^2 + lambda_V ||V||^2``:

- ``f_xent^M`` (eq. 5): the cross-entropy of the attacked segmentation ``S_DV`` against the
  U-Net's clean prediction ``S0`` (probabilities), weighted per pixel by the organ mask
  ``M = sum_{c>=1} S0(c)`` (= 1 - S0(background)). The paper leaves the reduction open; we
  take the M-weighted *mean* over pixels (sum of ``M * CE`` over sum of ``M``), so that xi is
  the mean cross-entropy asked for on organ pixels, independent of image and organ size
  (xi = 2: the clean class keeps probability about e^-2 = 0.14 there).
- ``(xi - f)^2`` (eq. 4) asks for exactly that much damage: 0 leaves the image alone, large xi
  breaks the segmentation (and the realism term resists).
- ``||D||^2``, ``||V||^2`` (eq. 2): mean over pixels and channels of the squared fields (D in
  pixels, V in intensity units), averaged over the batch; lambda_D = 0.1, lambda_V = 0.01.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def masked_cross_entropy(clean_probs: Tensor, adv_logits: Tensor) -> Tensor:
    """Eq. 5 per sample (N,): ``sum_pix M * CE(S0, S_DV) / sum_pix M`` with ``M = 1 - S0(0)``.

    ``clean_probs`` (N, K, H, W) are the U-Net's softmax on the clean slice (treated as
    constants), ``adv_logits`` (N, K, H, W) its logits on the attacked slice. A slice without
    organ probability mass has no organ pixels and gives 0.
    """
    clean_probs = clean_probs.detach().float()
    ce = -(clean_probs * F.log_softmax(adv_logits.float(), dim=1)).sum(1)  # (N, H, W)
    mask = 1.0 - clean_probs[:, 0]
    return (mask * ce).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1e-6)


class DeformationAttackLoss:
    """The attack terms of ``L_gen`` (the WGAN term comes from :class:`~advmed.losses.wgan.WassersteinLoss`).

    Args:
        xi: the damage asked for (eq. 4), >= 0.
        lambda_d, lambda_v: weights of ``||D||^2`` and ``||V||^2`` (eq. 2), >= 0.
    """

    def __init__(self, xi: float = 2.0, lambda_d: float = 0.1, lambda_v: float = 0.01) -> None:
        for name, value in (("xi", xi), ("lambda_D", lambda_d), ("lambda_V", lambda_v)):
            if not float(value) >= 0:  # also rejects NaN
                raise ValueError(f"model.{name}={value} must be >= 0")
        self.xi, self.lambda_d, self.lambda_v = float(xi), float(lambda_d), float(lambda_v)

    def __call__(self, clean_probs: Tensor, adv_logits: Tensor, deformation: Tensor,
                 intensity: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``(terms, xent)``: the named terms (their sum plus the WGAN term is ``L_gen``) and the
        batch mean of eq. 5 (detached, for logging)."""
        xent = masked_cross_entropy(clean_probs, adv_logits)
        return {
            "xi": ((self.xi - xent) ** 2).mean(),
            "deformation": self.lambda_d * deformation.float().pow(2).flatten(1).mean(1).mean(),
            "intensity": self.lambda_v * intensity.float().pow(2).flatten(1).mean(1).mean(),
        }, xent.detach().mean()
