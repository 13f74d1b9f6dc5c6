"""A natural shift (a MedMNIST-C corruption or an H&E stain shift, :mod:`advmed.corruptions`) behind
the attack interface, so that ``advmed.evaluate``, its multiruns and ``advmed.collect`` measure
a corruption exactly as they measure an attack (DESIGN.md, contract 11: one report format)::

    python -m advmed.evaluate ckpt_path=... attack=natural_shift attack.shift=defocus_blur attack.severity=3
    python -m advmed.evaluate -m ckpt_path=... attack=natural_shift attack.shift=defocus_blur attack.severity=1,2,3,4,5

The robustness card (``suite=card``) uses it for every shift condition. Not an optimisation: the
model is not used, and there is no eps (the perturbation's L-inf / L2 are still reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from advmed.attacks.core.result import AttackResult
from advmed.corruptions import STAIN_SHIFT_NAMES, Shift, check_severity, corruptions_for, stain_shifts


def build_shift(name: str, modality: str, reference: str | Path | None = None) -> Shift:
    """The shift ``name``: a stain shift (``hed_jitter``, ``macenko``, ``reinhard``) or a MedMNIST-C
    corruption of ``modality`` (``histology``, ``ct``, ``xray``); unknown names list the valid ones."""
    if name in STAIN_SHIFT_NAMES:
        if modality != "histology":
            raise ValueError(f"stain shift '{name}' is defined for H&E histology, not for modality '{modality}': "
                             f"choose a corruption of {modality} instead")
        return stain_shifts([name], reference=reference)[name]
    return corruptions_for(modality, [name])[name]


class NaturalShift:
    """``shift`` at ``severity`` (1..5), called like an attack: ``x_shifted = NaturalShift(...)(model, x, y)``.

    Batch ``b`` of a run is shifted with seed ``seed + b`` (the shifts' own generators, never the
    global RNG), so a rerun shifts every image the same way.

    Args:
        shift: a :class:`~advmed.corruptions.Shift`, or its name (with ``modality``).
        severity: 1 (mild) .. 5 (strong), MedMNIST-C's scale.
        modality: the data's modality when ``shift`` is a name: ``histology``, ``ct`` or ``xray``.
        seed: the seed of the first batch.
        reference: an RGB tile to normalise to (Macenko / Reinhard by name); None: the published targets.
    """

    targeted = False
    target_class = None

    def __init__(self, shift: Shift | str, severity: int = 3, modality: str = "histology", seed: int = 0,
                 reference: str | Path | None = None) -> None:
        self.shift = build_shift(shift, modality, reference) if isinstance(shift, str) else shift
        self.severity = check_severity(severity, self.shift.name)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} of natural shift '{self.shift.name}' must be an integer")
        self.seed = seed
        self.batches = 0

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        with torch.no_grad():
            shifted = self.shift(x, self.severity, self.seed + self.batches)
        self.batches += 1
        return AttackResult(x_adv=shifted)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.run(model, x, y).x_adv

    def report_notes(self, metrics: Mapping[str, float]) -> list[str]:
        return [f"natural shift {self.shift.name} at severity {self.severity} (not an attack: the model is not used; "
                "test/attack_success_rate counts the images it changed from correct to wrong)"]

    def __repr__(self) -> str:
        return f"NaturalShift(shift={self.shift.name!r}, severity={self.severity}, seed={self.seed})"
