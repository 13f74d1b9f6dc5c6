"""LightningDataModules of advmed: one per dataset, plus the procedural default."""

from advmed.data.base import ClassificationDataModule
from advmed.data.medmnist import MedMNISTDataModule
from advmed.data.nct_crc_he import NCTCRCHEDataModule
from advmed.data.synthetic_histology import SyntheticHistologyDataModule

__all__ = [
    "ClassificationDataModule",
    "MedMNISTDataModule",
    "NCTCRCHEDataModule",
    "SyntheticHistologyDataModule",
]
