"""The AdvGAN objective of Lockshin et al. 2022 (sec. 3.3, eqs. 6-9) on the networks of Xiao et al. 2018:

``l = gamma * l_nce + theta * l_GAN + zeta * l_threshold`` (eq. 9), minimised by the generator, with

- ``l_threshold = sum_{x,y,c} max(|I_{x,y,c}| - thr, 0)^2`` (eq. 6). The paper calls ``I`` "an image
  passed as input to the generator", but the next sentence makes ``thr`` "the threshold for the
  maximum absolute value of the adversarial noise", and a penalty on the input image could not be
  changed by the generator: we read ``I`` as the generated perturbation ``G(x)`` (before the sum
  with ``x`` is clamped to [0, 1]). The sum runs over one image's pixels and channels, then the
  batch mean is taken, so the term's scale grows with the image (x 49 from 32 px to 224 px).
- ``l_nce = 1 / l_ce`` (eq. 7) with ``l_ce`` the batch-mean cross-entropy (eq. 8) of the target
  classifier's logits on ``x + G(x)`` against the true labels: minimising it drives the
  cross-entropy up (untargeted). The targeted variant minimises the cross-entropy to the target
  labels instead (a fixed class or labels per image), as Xiao et al.'s targeted ``L_adv`` does.
- ``l_GAN`` the vanilla GAN loss of eq. 1 (Goodfellow et al. 2014) with ``x`` as the real images and
  ``x + G(x)`` as the fakes: the discriminator maximises ``E log D(x) + E log(1 - D(x + G(x)))``;
  the generator minimises the non-saturating ``-E log D(x + G(x))`` by default (Goodfellow et al.,
  sec. 3: ``log(1 - D)`` has vanishing gradients while D wins; the same optimum), or eq. 1's own
  ``E log(1 - D(x + G(x)))`` with ``non_saturating=False``.

Every loss computes in float32 (bf16 logits are cast) and returns named scalar terms, already
weighted, for :class:`~advmed.models.gan.GANModule`'s hooks.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from advmed.losses.stylegan2 import NonSaturatingLoss


def _check_weight(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):  # also rejects NaN
        raise ValueError(f"model.{name}={value} must be a number >= 0 (the paper: gamma 10, theta 1, zeta 1)")
    return float(value)


def check_threshold(thr: float) -> float:
    """``thr`` as a float, or a ValueError naming ``model.thr`` (it must be > 0, in [0, 1] pixel units)."""
    if not (isinstance(thr, int | float) and math.isfinite(thr) and thr > 0):
        raise ValueError(f"model.thr={thr} must be > 0: the largest |noise| that goes unpenalised, in [0, 1] pixel "
                         "units (e.g. 0.1)")
    return float(thr)


class ThresholdLoss:
    """Eq. 6: per image ``sum max(|perturbation| - thr, 0)^2`` over pixels and channels, batch mean.

    Args:
        thr: the largest absolute noise value that costs nothing, in [0, 1] pixel units (> 0).
    """

    def __init__(self, thr: float = 0.1) -> None:
        self.thr = check_threshold(thr)

    def __call__(self, perturbation: Tensor) -> Tensor:
        excess = (perturbation.float().abs() - self.thr).clamp_min(0.0)
        return excess.square().flatten(1).sum(1).mean()


class NegatedCrossEntropyLoss:
    """Eqs. 7-8: ``1 / l_ce`` with ``l_ce`` the batch-mean cross-entropy of ``logits`` against ``labels``
    (untargeted: the true labels); ``targeted=True``: ``l_ce`` itself, against the target labels.

    Args:
        targeted: minimise the cross-entropy to target labels instead of maximising it to the true ones.
        eps: added to ``l_ce`` before the inverse (untargeted), so that a classifier certain enough to
            round its cross-entropy to 0 in float32 gives a large finite loss with a gradient, not inf.
    """

    def __init__(self, targeted: bool = False, eps: float = 1e-6) -> None:
        if not eps >= 0:
            raise ValueError(f"eps={eps} must be >= 0")
        self.targeted, self.eps = bool(targeted), float(eps)

    def __call__(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, l_ce)``: the loss to minimise and the batch-mean cross-entropy (eq. 8)."""
        ce = F.cross_entropy(logits.float(), labels)
        return (ce if self.targeted else 1.0 / (ce + self.eps)), ce


class VanillaGANLoss:
    """Eq. 1 on discriminator logits (``D = sigmoid(logit)``), averaged over images and patches.

    Args:
        non_saturating: the generator minimises ``-E log D(fake)`` (True, the default) or
            ``E log(1 - D(fake))`` (eq. 1 as written).
    """

    def __init__(self, non_saturating: bool = True) -> None:
        self.non_saturating = bool(non_saturating)

    def generator(self, fake_logits: Tensor) -> Tensor:
        if self.non_saturating:
            return NonSaturatingLoss.generator(fake_logits)["adversarial"]
        # log(1 - sigmoid(l)) = -softplus(l)
        return -F.softplus(fake_logits.float()).mean()

    @staticmethod
    def critic(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """``-l_GAN`` of eq. 1, minimised by D: ``{"real": -E log D(x), "fake": -E log(1 - D(x_adv))}``."""
        return NonSaturatingLoss.critic(real_logits, fake_logits)


class AdvGANLoss:
    """Eq. 9: the generator's weighted terms ``{"nce" (or "target_ce"), "gan", "threshold"}`` and the
    discriminator's eq. 1 terms.

    Args:
        gamma, theta, zeta: the weights of ``l_nce``, ``l_GAN`` and ``l_threshold`` (>= 0; the paper: 10, 1, 1).
        thr: eq. 6's threshold (> 0, [0, 1] pixel units).
        targeted: the adversarial term is the cross-entropy to target labels (term ``target_ce``)
            instead of ``1 / l_ce`` to the true labels (term ``nce``).
        non_saturating: the generator's GAN term (see :class:`VanillaGANLoss`).
    """

    def __init__(self, gamma: float = 10.0, theta: float = 1.0, zeta: float = 1.0, thr: float = 0.1,
                 targeted: bool = False, non_saturating: bool = True) -> None:
        self.gamma, self.theta, self.zeta = (_check_weight(n, v) for n, v in (("gamma", gamma), ("theta", theta),
                                                                              ("zeta", zeta)))
        self.threshold = ThresholdLoss(thr)
        self.adversarial = NegatedCrossEntropyLoss(targeted)
        self.gan = VanillaGANLoss(non_saturating)

    def generator(self, adv_logits: Tensor, labels: Tensor, fake_logits: Tensor,
                  perturbation: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``(terms, l_ce)``: eq. 9's weighted terms (their sum is ``l``) and the batch-mean
        cross-entropy of eq. 8 (detached, for logging).

        Args:
            adv_logits: the target classifier's logits on ``x + G(x)`` (N, K).
            labels: the true labels (untargeted) or the target labels (targeted), (N,).
            fake_logits: the discriminator's logits on ``x + G(x)``.
            perturbation: ``G(x)``.
        """
        adversarial, ce = self.adversarial(adv_logits, labels)
        name = "target_ce" if self.adversarial.targeted else "nce"
        return {
            name: self.gamma * adversarial,
            "gan": self.theta * self.gan.generator(fake_logits),
            "threshold": self.zeta * self.threshold(perturbation),
        }, ce.detach()

    def critic(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """The discriminator's terms, unweighted: ``theta`` scales only the generator's side."""
        return self.gan.critic(real_logits, fake_logits)
