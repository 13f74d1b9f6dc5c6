"""HU display windowing into [0, 1] (DESIGN contract 1), shared by every CT data module.

A window of ``level`` and ``width`` maps ``level - width / 2`` HU to 0 and ``level + width / 2`` HU
to 1 and clips outside (abdomen 40 / 400, liver 60 / 160, bone 400 / 1800). One implementation for
numpy arrays (real scans, read by :mod:`advmed.data.ct.readers`) and torch tensors (the rendered
phantom of :mod:`advmed.data.ct.phantom`), so that both kinds of CT data are windowed identically.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def check_window(level: float, width: float) -> None:
    """A HU window needs a finite level and a finite width > 0."""
    if not (math.isfinite(float(level)) and math.isfinite(float(width)) and float(width) > 0):
        raise ValueError(
            f"HU window window_level={level}, window_width={width} is invalid: the level must be finite and "
            "the width must be > 0 (e.g. abdomen 40 / 400, liver 60 / 160, bone 400 / 1800); set "
            "data.window_level / data.window_width"
        )


def window_hu(hu: Array, level: float, width: float) -> Array:
    """HU -> [0, 1] through the window, clipped. A torch tensor stays a tensor of its dtype; a numpy
    array becomes float32."""
    check_window(level, width)
    low, width = float(level) - float(width) / 2.0, float(width)
    if isinstance(hu, torch.Tensor):
        return ((hu - low) / width).clamp(0.0, 1.0)
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / width, 0.0, 1.0)


def unwindow_hu(x: Array, level: float, width: float) -> Array:
    """HU of windowed intensities (exact inside the window; clipped values stay at its ends)."""
    return x * width + (level - width / 2)
