"""Training losses as objects apart from the networks (the NVlabs StyleGAN2-ADA split): a module
combines a network with a loss from here, so the same loss serves several models."""

from advmed.losses.advgan import AdvGANLoss, NegatedCrossEntropyLoss, ThresholdLoss, VanillaGANLoss
from advmed.losses.deformation_attack import DeformationAttackLoss, masked_cross_entropy
from advmed.losses.srgan import (
           SRGANLoss,
           discriminator_loss,
           feature_mse,
           generator_adversarial_loss,
           pixel_mse,
)
from advmed.losses.stylegan2 import NonSaturatingLoss, PathLengthPenalty, R1Penalty
from advmed.losses.wgan import WassersteinLoss, gradient_penalty

__all__ = ["AdvGANLoss", "DeformationAttackLoss", "NegatedCrossEntropyLoss", "ThresholdLoss", "VanillaGANLoss", "NonSaturatingLoss", "PathLengthPenalty", "R1Penalty", "SRGANLoss",
           "WassersteinLoss", "discriminator_loss", "feature_mse", "generator_adversarial_loss", "gradient_penalty",
           "masked_cross_entropy", "pixel_mse"]
