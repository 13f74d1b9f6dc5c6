"""LightningDataModules of advmed: one per dataset, plus the procedural defaults."""

from advmed.data.base import ClassificationDataModule
from advmed.data.ct_slices import CTSliceDataModule
from advmed.data.hcd import HCDDataModule
from advmed.data.medmnist import MedMNISTDataModule
from advmed.data.nct_crc_he import NCTCRCHEDataModule
from advmed.data.pcam import PCamDataModule
from advmed.data.synthetic_ct import SyntheticCTDataModule
from advmed.data.synthetic_histology import SyntheticHistologyDataModule
from advmed.data.synthetic_lymph_node import SyntheticLymphNodeDataModule

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
