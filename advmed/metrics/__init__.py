"""Metrics the libraries lack, in torchmetrics style."""

from advmed.metrics.attack_success import AttackSuccessRate, attack_success_mask
from advmed.metrics.perceptibility import Perceptibility
from advmed.metrics.segmentation import SegmentationScores

__all__ = ["AttackSuccessRate", "Perceptibility", "SegmentationScores", "attack_success_mask"]
