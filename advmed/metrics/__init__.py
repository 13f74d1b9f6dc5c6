"""Metrics the libraries lack, in torchmetrics style."""

from advmed.metrics.attack_success import AttackSuccessRate, attack_success_mask

__all__ = ["AttackSuccessRate", "attack_success_mask"]
