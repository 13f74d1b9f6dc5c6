"""Training losses as objects apart from the networks (the NVlabs StyleGAN2-ADA split): a module
combines a network with a loss from here, so the same loss serves several models."""

from advmed.losses.deformation_attack import DeformationAttackLoss, masked_cross_entropy
from advmed.losses.wgan import WassersteinLoss, gradient_penalty

__all__ = ["DeformationAttackLoss", "WassersteinLoss", "gradient_penalty", "masked_cross_entropy"]
