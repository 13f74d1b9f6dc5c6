"""MedMNIST-C's corruptions and their five severity parameters, per advmed modality.

MedMNIST-C (Di Salvo et al., 2024, "MedMNIST-C: Comprehensive benchmark and improved classifier
robustness by simulating realistic image corruptions") defines, for each MedMNIST dataset, the
corruptions that occur in its acquisition and one parameter per severity 1..5. advmed takes the
table of the MedMNIST dataset closest to each of its modalities:

- ``histology`` -> ``pathmnist`` (H&E colon tissue, RGB),
- ``ct`` -> ``organamnist`` (axial abdominal CT, grey),
- ``xray`` -> ``pneumoniamnist`` (chest X-ray, grey).

The values are those of ``CORRUPTIONS_DS`` in ``medmnistc/corruptions/registry.py`` (PyPI
``medmnistc==0.1.0``), in its order. They are written out here rather than read from medmnistc so
that the batched torch corruptions work without medmnistc or ImageMagick installed (importing the
registry imports Wand); ``tests/corruptions/test_medmnist_c.py`` checks them against the installed
registry. They are MedMNIST-C's as published, defined on 224 px images; advmed keeps them at every
image size (a 5-pixel blur radius is a stronger blur on a 32 px image than on a 224 px one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# advmed modality -> the MedMNIST dataset whose MedMNIST-C table it uses.
MODALITY_DATASETS = {"histology": "pathmnist", "ct": "organamnist", "xray": "pneumoniamnist"}
# MedMNIST-C's DATASET_RGB: a grey dataset's images go through its corruptions as RGB copies and
# come back to grey (medmnistc/dataset_manager.py); advmed does the same to 1-channel images.
RGB_DATASETS = frozenset({"pathmnist"})


@dataclass(frozen=True)
class CorruptionSpec:
    """One MedMNIST-C corruption of one dataset: ``kind`` is medmnistc's class, ``params`` its
    ``severity_params`` for severities 1..5 (medmnistc indexes them 0..4)."""

    name: str
    kind: str
    params: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.params) != 5:
            raise ValueError(f"corruption {self.name!r} needs 5 severity parameters, got {len(self.params)}")


def _table(*rows: tuple[str, str, tuple[Any, ...]]) -> dict[str, CorruptionSpec]:
    return {name: CorruptionSpec(name, kind, params) for name, kind, params in rows}


# registry.py, CORRUPTIONS_DS['pathmnist']
_PATHMNIST = _table(
    ("pixelate", "Pixelate", (0.8, 0.6, 0.40, 0.30, 0.25)),
    ("jpeg_compression", "JPEGCompression", (50, 30, 15, 10, 7)),
    ("defocus_blur", "DefocusBlur", ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3))),
    ("motion_blur", "MotionBlur", ((5, 5), (10, 5), (15, 5), (15, 8), (15, 12))),
    ("brightness_up", "Brightness", (1.1, 1.15, 1.2, 1.22, 1.25)),
    ("brightness_down", "Brightness", (0.85, 0.80, 0.75, 0.72, 0.70)),
    ("contrast_up", "Contrast", (1.1, 1.2, 1.3, 1.4, 1.6)),
    ("contrast_down", "Contrast", (0.8, 0.7, 0.6, 0.55, 0.5)),
    ("saturate", "Saturate", (0.05, 0.10, 0.15, 0.20, 0.25)),
    ("stain_deposit", "StainDeposit", (1, 2, 3, 4, 5)),
    ("bubble", "Bubble", ((7, 15), (10, 15), (12, 15), (15, 20), (17, 25))),
)

# registry.py, CORRUPTIONS_DS['organamnist']
_ORGANAMNIST = _table(
    ("pixelate", "Pixelate", (0.7, 0.6, 0.5, 0.40, 0.35)),
    ("jpeg_compression", "JPEGCompression", (50, 30, 15, 10, 7)),
    ("gaussian_noise", "GaussianNoise", (0.04, 0.08, 0.12, 0.16, 0.20)),
    ("speckle_noise", "SpeckleNoise", (0.05, 0.10, 0.20, 0.30, 0.40)),
    ("impulse_noise", "ImpulseNoise", (0.01, 0.02, 0.03, 0.05, 0.08)),
    ("shot_noise", "ShotNoise", (200, 100, 50, 25, 15)),
    ("gaussian_blur", "GaussianBlur", (11, 13, 15, 17, 21)),
    ("brightness_up", "Brightness", (1.2, 1.3, 1.4, 1.5, 1.6)),
    ("brightness_down", "Brightness", (0.8, 0.75, 0.7, 0.65, 0.60)),
    ("contrast_up", "Contrast", (1.3, 1.4, 1.6, 1.7, 1.8)),
    ("contrast_down", "Contrast", (0.8, 0.7, 0.6, 0.55, 0.5)),
    ("gamma_corr_up", "GammaCorrection", (1.3, 1.4, 1.6, 1.8, 2.0)),
    ("gamma_corr_down", "GammaCorrection", (0.9, 0.8, 0.7, 0.6, 0.4)),
)

# registry.py, CORRUPTIONS_DS['pneumoniamnist']. Its gaussian_blur lists six kernel sizes
# (3, 5, 7, 9, 11, 13); medmnistc only ever uses the first five (severity index 0..4).
_PNEUMONIAMNIST = _table(
    ("pixelate", "Pixelate", (0.8, 0.7, 0.6, 0.5, 0.40)),
    ("jpeg_compression", "JPEGCompression", (50, 30, 15, 10, 7)),
    ("gaussian_noise", "GaussianNoise", (0.04, 0.05, 0.06, 0.07, 0.08)),
    ("speckle_noise", "SpeckleNoise", (0.05, 0.07, 0.10, 0.15, 0.20)),
    ("impulse_noise", "ImpulseNoise", (0.005, 0.01, 0.013, 0.017, 0.02)),
    ("shot_noise", "ShotNoise", (300, 200, 150, 100, 80)),
    ("gaussian_blur", "GaussianBlur", (3, 5, 7, 9, 11)),
    ("brightness_up", "Brightness", (1.1, 1.2, 1.3, 1.4, 1.5)),
    ("brightness_down", "Brightness", (0.9, 0.8, 0.7, 0.6, 0.5)),
    ("contrast_up", "Contrast", (1.1, 1.2, 1.3, 1.4, 1.6)),
    ("contrast_down", "Contrast", (0.9, 0.8, 0.7, 0.6, 0.4)),
    ("gamma_corr_up", "GammaCorrection", (1.1, 1.2, 1.3, 1.4, 1.6)),
    ("gamma_corr_down", "GammaCorrection", (0.9, 0.8, 0.7, 0.6, 0.4)),
)

# modality -> corruption name -> spec, each in MedMNIST-C's order.
MEDMNIST_C_TABLES: dict[str, dict[str, CorruptionSpec]] = {
    "histology": _PATHMNIST,
    "ct": _ORGANAMNIST,
    "xray": _PNEUMONIAMNIST,
}
