"""Metrics the libraries lack, in torchmetrics style."""

from advmed.metrics.attack_success import AttackSuccessRate, attack_success_mask
from advmed.metrics.fid import ClassConditionalFID, InceptionV3Features, resolve_inception_weights
from advmed.metrics.image_quality import SuperResolutionScores, write_quality_report
from advmed.metrics.perceptibility import Perceptibility
from advmed.metrics.segmentation import SegmentationScores

__all__ = ["AttackSuccessRate", "ClassConditionalFID", "InceptionV3Features", "Perceptibility", "SegmentationScores",
           "SuperResolutionScores", "attack_success_mask", "resolve_inception_weights", "write_quality_report"]
