"""SRGAN losses (Ledig et al. 2017, sec. 2.2) as used by Lockshin et al. 2022, sec. 3.2, eqs. 3-5.

- Content loss, eq. 4: ``l_VGG = 1 / (W_i H_i) sum_{x,y} (phi_i(I_HR)_{x,y} - phi_i(G(I_LR))_{x,y})^2``,
  a mean squared difference of frozen VGG19 feature maps (:class:`~advmed.nets.vgg_features.VGGFeatures`).
  The mean runs over the channels too (torch's ``mse_loss``, as SRGAN implementations do): the
  literal per-position sum over 512 channels would be 512 times larger and unbalance beta = 1e-3.
  Ledig et al. also rescale the VGG features by 1/12.75; ``alpha = 1 / 12.75**2`` reproduces that.
  Averaged over the batch.
- Adversarial loss, eq. 5: ``-log D(G(I_LR))`` on the discriminator's logits, in the stable form
  ``softplus(-logit)`` (= -log sigmoid(logit), finite for any logit). Eq. 5 sums over the batch;
  we average, so that beta does not change with the batch size (a sum equals the mean with
  ``beta * N``).
- Generator loss, eq. 3: ``l = alpha * l_VGG + beta * l_Gen`` (alpha 1, beta 1e-3 as in Ledig et al.).
- Discriminator loss: the vanilla GAN loss (Goodfellow et al. 2014; Lockshin eq. 1), which D
  maximises; minimised here as ``softplus(-D(I_HR)) + softplus(D(G(I_LR)))``, batch means.
- Pixel MSE: the SRResNet pre-training loss (Ledig et al. sec. 3.2), and the content loss's
  fallback when no VGG19 weights are available and ``content_fallback="pixel"``.

All losses take images in [0, 1] and return :data:`~advmed.models.gan.LossTerms`-style dicts of
named, already weighted scalars (their sum is the loss back-propagated).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONTENT_FALLBACKS = ("none", "pixel")


def _check_same_shape(sr: Tensor, hr: Tensor) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"super-resolved images {tuple(sr.shape)} and high-resolution targets {tuple(hr.shape)} "
                         "must have the same shape (is hr_size = scale * lr_size?)")


def pixel_mse(sr: Tensor, hr: Tensor) -> Tensor:
    """Mean squared pixel difference of ``sr`` and ``hr`` (N, C, H, W), over pixels, channels and batch."""
    _check_same_shape(sr, hr)
    return F.mse_loss(sr.float(), hr.float())


def feature_mse(features: nn.Module, sr: Tensor, hr: Tensor) -> Tensor:
    """Eq. 4, averaged over the batch: mean squared difference of ``features(hr)`` and ``features(sr)``
    (mean over positions and channels, see the module docstring). The target features carry no gradient."""
    _check_same_shape(sr, hr)
    with torch.no_grad():  # a fixed target: no graph through phi(I_HR)
        target = features(hr)
    return F.mse_loss(features(sr).float(), target.float())


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Eq. 5, averaged over the batch: ``mean(-log sigmoid(D(G(I_LR))))`` = ``mean(softplus(-logit))``."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """The vanilla GAN discriminator loss as terms ``real`` (``mean -log D(I_HR)``) and ``fake``
    (``mean -log(1 - D(G(I_LR)))``), in softplus form on logits."""
    return {"real": F.softplus(-real_logits.float()).mean(), "fake": F.softplus(fake_logits.float()).mean()}


class SRGANLoss:
    """The SRGAN objective, eq. 3, with its pre-training and discriminator sides.

    Args:
        features: the perceptual network phi_i taking [0, 1] images (a
            :class:`~advmed.nets.vgg_features.VGGFeatures`, or any module); None or one whose
            ``available`` is False (VGG19 weights missing, ``on_missing="warn"``) switches the
            perceptual term off. The module that trains the generator owns this network (register
            it, e.g. with ``GANModule.freeze_target``, so that it follows the device and stays out
            of the checkpoint); the loss only calls it.
        alpha, beta: weights of the content and adversarial terms (eq. 3), >= 0.
        content_fallback: without the perceptual network, ``"pixel"`` puts ``alpha * pixel MSE``
            in its place (term ``pixel``); ``"none"`` omits the content term (the generator then
            learns from the adversarial term alone). Either case is stated in a warning.
    """

    def __init__(self, features: nn.Module | None = None, alpha: float = 1.0, beta: float = 1e-3,
                 content_fallback: str = "none") -> None:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not float(value) >= 0:  # also rejects NaN
                raise ValueError(f"model.{name}={value} must be >= 0 (eq. 3 weights a sum of losses)")
        if content_fallback not in CONTENT_FALLBACKS:
            raise ValueError(f"content_fallback={content_fallback!r} must be one of {CONTENT_FALLBACKS}")
        self.alpha, self.beta, self.content_fallback = float(alpha), float(beta), content_fallback
        self.features = features if features is not None and getattr(features, "available", True) else None
        if self.features is None:
            outcome = ("the content term falls back to pixel MSE (term 'pixel', weight alpha)" if content_fallback == "pixel"
                       else "the content term is omitted: the generator learns from the adversarial term alone "
                            "(set content_fallback='pixel' to use pixel MSE instead)")
            warnings.warn(f"SRGAN without a perceptual (VGG19) feature network: {outcome}.", stacklevel=2)

    @property
    def perceptual(self) -> bool:
        """Whether the content term is the VGG feature loss of eq. 4."""
        return self.features is not None

    def content(self, sr: Tensor, hr: Tensor) -> dict[str, Tensor]:
        """``alpha *`` eq. 4 as term ``content``; without features the configured fallback (or nothing)."""
        if self.features is not None:
            return {"content": self.alpha * feature_mse(self.features, sr, hr)}
        if self.content_fallback == "pixel":
            return {"pixel": self.alpha * pixel_mse(sr, hr)}
        _check_same_shape(sr, hr)
        return {}

    def generator(self, sr: Tensor, hr: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """Eq. 3: the content terms and ``adversarial`` = ``beta *`` eq. 5; ``fake_logits`` are D's logits on ``sr``."""
        return {**self.content(sr, hr), "adversarial": self.beta * generator_adversarial_loss(fake_logits)}

    @staticmethod
    def pretrain(sr: Tensor, hr: Tensor) -> dict[str, Tensor]:
        """The SRResNet pre-training loss: term ``pixel`` = pixel MSE (no discriminator)."""
        return {"pixel": pixel_mse(sr, hr)}

    @staticmethod
    def discriminator(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """The vanilla GAN discriminator loss (:func:`discriminator_loss`)."""
        return discriminator_loss(real_logits, fake_logits)
