"""PatchCamelyon (Veeling et al. 2018): 96x96 H&E lymph-node tiles, label 1 = metastasis in the centre.

On-disk layout, as downloaded from Zenodo record 2546921 (github.com/basveeling/pcam) and
gunzipped: ``<root>/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``. Each ``_x`` file
holds one HDF5 dataset ``x`` of shape (N, 96, 96, 3) uint8 (RGB), each ``_y`` file one dataset
``y`` of shape (N, 1, 1, 1) uint8. A tile is positive when its centre 32x32 region contains
tumour tissue; the official splits (262,144 / 32,768 / 32,768) are used as train / val / test.

Images are read lazily with h5py (the train x file alone is 7 GB): each process opens its own
read-only handle on first access, because an HDF5 handle must not cross a fork or a pickle
(DataLoader workers). Labels are small and read whole at setup, so that ``targets`` is known up
front for stratified ``train_fraction`` subsets. The file layout and its checks are in
:mod:`.pcam_layout`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from advmed.data.base import FixedClassesDataModule
from advmed.data.classification_datasets import LabelledDataset, center_crop, to_float_image
from advmed.data.lymph_node.pcam_layout import (
    CLASS_NAMES,
    DOWNLOAD_HINT,
    TILE_SIZE,
    check_images,
    read_labels,
    split_file,
)
from advmed.data.readers import existing_folder


def tile_to_image(tile: np.ndarray, crop: int | None, size: int | None) -> torch.Tensor:
    """uint8 (H, W, 3) tile -> float32 [0, 1] (3, size, size): centre crop first, then resize."""
    image = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)
    return to_float_image(center_crop(image, crop), size)


def check_center_crop(crop: int | None) -> int | None:
    """``center_crop`` of a PCam-like tile: null, or a side in 1..96 (the label's region is the centre 32x32)."""
    if crop is not None and not 0 < crop <= TILE_SIZE:
        raise ValueError(
            f"center_crop must be null or in 1..{TILE_SIZE} (the tiles are {TILE_SIZE}x{TILE_SIZE}); "
            f"got {crop}. The label refers to the centre 32x32 region"
        )
    return crop


class PCamH5Dataset(LabelledDataset):
    """Tiles of one PCam ``_x.h5`` file, read lazily; items are float32 [0, 1] (3, size, size), int64.

    The file is opened on first access in each process (the pid is tracked, so a handle inherited
    through a fork is replaced) and the handle is dropped when pickled, so the dataset can be sent
    to DataLoader workers. ``center_crop`` keeps the central region before resizing.
    """

    def __init__(
        self,
        x_path: str | Path,
        targets: torch.Tensor,
        image_size: int | None = None,
        center_crop: int | None = None,
    ) -> None:
        self.x_path = Path(x_path)
        self.targets = targets.long()
        self.image_size = image_size
        self.center_crop = center_crop
        self._handle: h5py.File | None = None
        self._pid: int | None = None

    def _images(self) -> h5py.Dataset:
        if self._handle is None or self._pid != os.getpid():
            # A handle from another process (fork) is not ours to use or close; open our own.
            self._handle = h5py.File(self.x_path, "r")
            self._pid = os.getpid()
        return self._handle["x"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        tile = self._images()[int(index)]  # reads one (96, 96, 3) tile, never the whole split
        return tile_to_image(tile, self.center_crop, self.image_size), self.targets[index]

    def close(self) -> None:
        """Close this process's handle (reopened on the next access)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"] = None, None  # HDF5 handles cannot be pickled
        return state


class PCamDataModule(FixedClassesDataModule):
    """PatchCamelyon binary classification on the official train / valid / test HDF5 files.

    Args:
        root: folder holding the six gunzipped ``camelyonpatch_level_2_split_*_{x,y}.h5`` files.
        image_size: output side in pixels (96 = native; e.g. 224 resizes with antialiasing).
        center_crop: ``None``, or keep the central ``center_crop`` x ``center_crop`` pixels before
            resizing (32 = exactly the region the label refers to).
        num_classes, class_names, in_channels: fixed by the dataset; accepted for config
            interpolation and checked.
        Other arguments: see :class:`~advmed.data.base.ClassificationDataModule`.

    The files of a split are checked when that split is first needed (``setup``): a missing or
    still gzipped file, a missing ``x``/``y`` dataset, a wrong dtype or shape, or x and y of
    different lengths each raise an error naming the file and the fix.
    """

    modality = "histology"
    stain = "he"

    NAME = "PatchCamelyon"
    CLASS_NAMES = CLASS_NAMES

    def __init__(
        self,
        root: str | Path | None = None,
        image_size: int = TILE_SIZE,
        center_crop: int | None = None,
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
        self.center_crop = check_center_crop(center_crop)
        self.root = existing_folder(root, "PatchCamelyon", DOWNLOAD_HINT)

    def _build_split(self, split: str) -> LabelledDataset:
        x_path = split_file(self.root, split, "x")
        y_path = split_file(self.root, split, "y")
        targets = read_labels(y_path)
        num_images = check_images(x_path)
        if num_images != len(targets):
            raise ValueError(
                f"{x_path.name} holds {num_images} tiles but {y_path.name} holds {len(targets)} labels; "
                f"one of them is truncated or from another split: download both again. {DOWNLOAD_HINT}"
            )
        return PCamH5Dataset(x_path, targets, self.image_size, self.center_crop)
