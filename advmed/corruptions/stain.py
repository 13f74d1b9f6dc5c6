"""The H&E stain shifts by name: HED jitter (Tellez et al. 2019, :mod:`.stain_jitter`) and Macenko
(2009) / Reinhard (2001) normalisation to a reference tile (:mod:`.stain_normalisation`).

``stain_shifts()`` builds them for an evaluation (each a :class:`~advmed.corruptions.base.Shift`,
severity 1..5); :class:`RandomStainShift` is the training augmentation. STAIN_NOTES.md has the
severity tables and the choices behind them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

from advmed.corruptions.base import Shift
from advmed.corruptions.stain_jitter import HED_JITTER_SIGMAS, HEDJitter, RandomStainShift
from advmed.corruptions.stain_normalisation import (
    NORMALISATION_WEIGHTS,
    MacenkoNormalisation,
    ReinhardNormalisation,
    default_reference_tile,
    load_reference_tile,
)

STAIN_SHIFT_NAMES = ("hed_jitter", "macenko", "reinhard")


def stain_shifts(
    names: str | Iterable[str] | None = None, reference: str | Path | Tensor | None = None
) -> dict[str, Shift]:
    """The stain shifts ``names`` (one name or several; default: all of ``STAIN_SHIFT_NAMES``), by name.

    ``reference`` is the normalisation target of ``macenko`` and ``reinhard``: an RGB image file
    (or a (3, H, W) tensor) of an H&E tile from the target lab; ``None`` for the
    built-in targets (the published Macenko reference; the LAB statistics of
    :func:`default_reference_tile`). ``hed_jitter`` ignores it.
    """
    names = STAIN_SHIFT_NAMES if names is None else (names,) if isinstance(names, str) else tuple(names)
    unknown = [name for name in names if name not in STAIN_SHIFT_NAMES]
    if unknown:
        raise ValueError(f"unknown stain shift(s) {unknown}; the stain shifts are {list(STAIN_SHIFT_NAMES)}")
    builders = {
        "hed_jitter": HEDJitter,
        "macenko": lambda: MacenkoNormalisation(reference),
        "reinhard": lambda: ReinhardNormalisation(reference),
    }
    return {name: builders[name]() for name in names}


__all__ = [
    "HED_JITTER_SIGMAS",
    "NORMALISATION_WEIGHTS",
    "STAIN_SHIFT_NAMES",
    "HEDJitter",
    "MacenkoNormalisation",
    "RandomStainShift",
    "ReinhardNormalisation",
    "default_reference_tile",
    "load_reference_tile",
    "stain_shifts",
]
