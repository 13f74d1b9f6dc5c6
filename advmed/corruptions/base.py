"""The base of every natural shift (:class:`Shift`): a corruption or stain change of a batch of
images at a severity from 1 (mild) to 5 (strong).

Contract (DESIGN.md, pixel space): ``images`` are float in [0, 1], ``(N, C, H, W)``, on any
device; the result has the shape, dtype and device of ``images`` and stays in [0, 1]. A shift is
deterministic given ``(images, severity, seed)``: the card (``suite=card``) passes one seed per
batch, so a rerun gives the same images. ``modalities`` names the data a shift is defined for
(``histology``, ``ct``, ``xray``; a datamodule says its own with its ``modality`` attribute).
"""

from __future__ import annotations

import abc
from typing import ClassVar

from torch import Tensor

SEVERITIES = (1, 2, 3, 4, 5)


def check_severity(severity: int, name: str) -> int:
    """``severity`` as an int in 1..5, or a clear error that names the shift."""
    if isinstance(severity, bool) or int(severity) != severity or int(severity) not in SEVERITIES:
        raise ValueError(f"severity={severity!r} of shift '{name}' must be an integer from 1 to 5 (MedMNIST-C's scale)")
    return int(severity)


class Shift(abc.ABC):
    """A natural shift of ``(N, C, H, W)`` [0, 1] images. Subclasses set ``name`` and ``modalities``
    and implement :meth:`apply`; callers use ``shift(images, severity, seed)``."""

    name: ClassVar[str]
    modalities: ClassVar[frozenset[str]]

    def __call__(self, images: Tensor, severity: int, seed: int = 0) -> Tensor:
        severity = check_severity(severity, self.name)
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"shift '{self.name}' takes float images (N, C, H, W) in [0, 1], got "
                             f"{tuple(images.shape)} {images.dtype}")
        out = self.apply(images, severity, int(seed))
        return out.to(device=images.device, dtype=images.dtype).clamp_(0.0, 1.0)

    def min_side(self, severity: int) -> int:
        """The smallest image side (px) the shift can take at ``severity`` (1: any)."""
        return 1

    @abc.abstractmethod
    def apply(self, images: Tensor, severity: int, seed: int) -> Tensor:
        """The shifted images (severity already checked)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
