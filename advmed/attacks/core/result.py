"""The record of what one attack call produced (:class:`AttackResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from advmed.attacks.core.trace import AttackTrace


@dataclass
class AttackResult:
    """What one call of :meth:`Attack.run` produced.

    Attributes:
        x_adv: the adversarial images, shape, dtype and device of ``x``.
        trace: the per-step record of an iterative attack built with ``trace=True``, else None.
        region: bool ``(N, 1, H, W)``, the pixels the attack was allowed to change when its
            budget is a region (patch attacks); None when it may change every pixel.
        stats: per-sample figures an attack reports beyond the perturbation size, name ->
            ``(N,)`` tensor (e.g. SNAP's ``area_fraction``); callers log their means.
    """

    x_adv: Tensor
    trace: AttackTrace | None = None
    region: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
