"""LightningDataModules of advmed: one per dataset, grouped by family, plus the procedural defaults.

Where to look:

- ``ct/``: abdominal CT slices for segmentation: the real-data module (:mod:`.ct.ct_slices`: NIfTI,
  DICOM, ``.npz`` and PNG pairs, SA-Med2D), its readers, volume sources, label presets and HU window,
  and the synthetic phantom (:mod:`.ct.synthetic_ct`).
- ``histology/``: NCT-CRC-HE-100K (:mod:`.histology.nct_crc_he`) and synthetic histology.
- ``lymph_node/``: PCam, Kaggle's Histopathologic Cancer Detection (HCD) and synthetic lymph nodes.
- ``medmnist/``: the MedMNIST ``.npz`` files (any modality; :mod:`.medmnist.medmnist`).
- ``*_layout`` modules (:mod:`.histology.nct_crc_he_layout`, :mod:`.lymph_node.pcam_layout`,
  :mod:`.lymph_node.hcd_layout`, :mod:`.medmnist.medmnist_layout`): a dataset's files on disk and their checks,
  without Lightning, shared by its DataModule and by :mod:`.download`.
- Shared by every family: :mod:`.base` (splits, loaders, classification base),
  :mod:`.classification_datasets`, :mod:`.segmentation`
  and :mod:`.segmentation_datasets` (segmentation base and its datasets), :mod:`.png_pairs` (the 2D
  image / mask layout that attacked segmentation copies use too), :mod:`.procedural` (base of the
  synthetic sets), :mod:`.tissue_rendering` (their rendering toolkit), :mod:`.readers`,
  :mod:`.writers`, :mod:`.decoded_cache`, :mod:`.copy_layouts`, :mod:`.augmentation`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# The DataModules import Lightning (seconds): they load on first use, so that a command which needs
# none of them (``python -m advmed.data.download``, ``advmed.data.decoded_cache``) starts at once.
_MODULES = {
    "ClassificationDataModule": "advmed.data.base",
    "CTSliceDataModule": "advmed.data.ct.ct_slices",
    "HCDDataModule": "advmed.data.lymph_node.hcd",
    "MedMNISTDataModule": "advmed.data.medmnist.medmnist",
    "NCTCRCHEDataModule": "advmed.data.histology.nct_crc_he",
    "PCamDataModule": "advmed.data.lymph_node.pcam",
    "SyntheticCTDataModule": "advmed.data.ct.synthetic_ct",
    "SyntheticHistologyDataModule": "advmed.data.histology.synthetic_histology",
    "SyntheticLymphNodeDataModule": "advmed.data.lymph_node.synthetic_lymph_node",
}
__all__ = [
    "CTSliceDataModule",
    "ClassificationDataModule",
    "HCDDataModule",
    "MedMNISTDataModule",
    "NCTCRCHEDataModule",
    "PCamDataModule",
    "SyntheticCTDataModule",
    "SyntheticHistologyDataModule",
    "SyntheticLymphNodeDataModule",
]

if TYPE_CHECKING:  # what the names are, for type checkers and IDEs
    from advmed.data.base import ClassificationDataModule
    from advmed.data.ct.ct_slices import CTSliceDataModule
    from advmed.data.ct.synthetic_ct import SyntheticCTDataModule
    from advmed.data.histology.nct_crc_he import NCTCRCHEDataModule
    from advmed.data.histology.synthetic_histology import SyntheticHistologyDataModule
    from advmed.data.lymph_node.hcd import HCDDataModule
    from advmed.data.lymph_node.pcam import PCamDataModule
    from advmed.data.lymph_node.synthetic_lymph_node import SyntheticLymphNodeDataModule
    from advmed.data.medmnist.medmnist import MedMNISTDataModule


def __getattr__(name: str):
    """``advmed.data.<DataModule>``, imported on first access (PEP 562)."""
    if name not in _MODULES:
        raise AttributeError(f"module 'advmed.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
