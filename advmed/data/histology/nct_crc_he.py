"""NCT-CRC-HE-100K (Kather et al. 2018): 224x224 H&E tiles of 9 colorectal tissue classes.

On-disk layout, as unzipped from Zenodo record 1214456: ``<root>/<CLASS>/<CLASS>-<id>.tif``
(RGB uint8 TIFF). CRC-VAL-HE-7K, from the same record, has the same layout and can serve as an
external test set (``test_root``). Images are read lazily, one file per item, or, with
``cache_dir``, from a decoded cache of each folder (:mod:`advmed.data.decoded_cache`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from advmed.data.base import FixedClassesDataModule, check_count, check_fraction, stratified_split
from advmed.data.classification_datasets import ImageFolderDataset, LabelledDataset, SubsetDataset
from advmed.data.histology.nct_crc_he_layout import CLASS_NAMES
from advmed.data.readers import existing_folder, scan_class_folders

_DOWNLOAD_HINT = (
    "Download {archive}.zip from Zenodo record 1214456 (https://zenodo.org/record/1214456), unzip it "
    "so that <root>/ADI/*.tif exists, and set {key}=/path/to/{archive}"
)


class NCTCRCHEDataModule(FixedClassesDataModule):
    """NCT-CRC-HE-100K classification, by default the balanced 22,500-tile subset of Lockshin 2022.

    ``per_class`` tiles of every class are drawn (seeded) from ``root``; a stratified
    ``test_fraction`` of them is the test set (2,500 per class and 0.2 give 18,000 / 4,500), and a
    stratified ``val_fraction`` of the rest is the validation set. With ``test_root`` the test set is
    that folder instead (all of it, e.g. CRC-VAL-HE-7K) and ``test_fraction`` is unused.

    Args:
        root: folder holding ADI/, BACK/, ... (NCT-CRC-HE-100K unzipped).
        test_root: optional external test folder with the same layout.
        per_class: tiles per class drawn from ``root``; ``None`` uses every tile.
        test_fraction: share of the drawn tiles held out for testing, in (0, 1).
        val_fraction: share of the remaining tiles used for validation, in (0, 1).
        image_size: output side in pixels (224 = native; e.g. 128 resizes with antialiasing).
        cache_dir: ``None`` reads the TIFFs one by one; a folder keeps there a decoded cache of
            ``root`` (and ``test_root``), built on first use with ``num_workers`` processes and
            rebuilt when the folder changes. Items are the same, bit for bit.
        num_classes, class_names, in_channels: fixed by the dataset; accepted for config
            interpolation and checked.
        Other arguments: see :class:`~advmed.data.base.ClassificationDataModule`.
    """

    modality = "histology"
    stain = "he"

    NAME = "NCT-CRC-HE"
    CLASS_NAMES = CLASS_NAMES

    def __init__(
        self,
        root: str | Path | None = None,
        test_root: str | Path | None = None,
        per_class: int | None = 2500,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        image_size: int = 224,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        train_fraction: float = 1.0,
        extra_train_roots: Sequence[str] | None = None,
        augment: Mapping[str, Any] | None = None,
        num_classes: int = len(CLASS_NAMES),
        class_names: Sequence[str] = CLASS_NAMES,
        in_channels: int = 3,
    ) -> None:
        super().__init__(
            num_classes=num_classes, class_names=class_names, in_channels=in_channels, image_size=image_size,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, extra_train_roots=extra_train_roots, augment=augment,
        )
        self.per_class = check_count("per_class", per_class, minimum=2, allow_none=True)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.root = _folder(root, "NCT-CRC-HE-100K", "data.root or ADVMED_NCT_CRC_HE_ROOT")
        self.test_root = None if test_root is None else _folder(test_root, "CRC-VAL-HE-7K", "data.test_root")
        self.cache_dir = cache_dir

    def _build_splits(self) -> dict[str, LabelledDataset]:
        """Scan ``root`` once, draw the balanced subset and split it train / val / test."""
        full = self._folder_dataset(self.root)
        drawn = self._draw_per_class(full)
        if self.test_root is None:
            test_idx, rest_idx = stratified_split(drawn.targets, self.test_fraction, self.seed)
            test = SubsetDataset(drawn, test_idx)
            drawn = SubsetDataset(drawn, rest_idx)
        else:
            test = self._folder_dataset(self.test_root)
        val_idx, train_idx = stratified_split(drawn.targets, self.val_fraction, self.seed)
        return {"train": SubsetDataset(drawn, train_idx), "val": SubsetDataset(drawn, val_idx), "test": test}

    def _folder_dataset(self, folder: Path) -> ImageFolderDataset:
        # Imported here, not at the top: advmed.data imports this module, and a top-level import
        # would make `python -m advmed.data.decoded_cache` run a second copy of it (runpy warns).
        from advmed.data.decoded_cache import decoded_images

        items = scan_class_folders(folder, self.class_names)
        paths = [path for path, _ in items]
        images = decoded_images(folder, paths, self.cache_dir, self.num_workers)
        return ImageFolderDataset(items, self.image_size, images=images)

    def _draw_per_class(self, full: ImageFolderDataset) -> LabelledDataset:
        if self.per_class is None:
            return full
        counts = torch.bincount(full.targets, minlength=self.num_classes)
        short = {self.class_names[c]: int(n) for c, n in enumerate(counts) if n < self.per_class}
        if short:
            raise ValueError(
                f"per_class={self.per_class} but {self.root} has fewer tiles in {short}; "
                "lower data.per_class or set data.per_class=null to use every tile"
            )
        generator = torch.Generator().manual_seed(self.seed)
        chosen = [
            members[torch.randperm(len(members), generator=generator)[: self.per_class]]
            for members in (torch.nonzero(full.targets == c).flatten() for c in range(self.num_classes))
        ]
        return SubsetDataset(full, torch.cat(chosen).sort().values)


def _folder(path: str | Path | None, archive: str, key: str) -> Path:
    return existing_folder(path, archive, _DOWNLOAD_HINT.format(archive=archive, key=key))
