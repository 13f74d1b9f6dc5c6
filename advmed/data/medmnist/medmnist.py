"""MedMNIST v2 / v3 (MedMNIST+) 2D datasets from their ``.npz`` files.

Each file holds ``{train,val,test}_images`` -- uint8 (N, H, W) grayscale or (N, H, W, 3) RGB, H = W
in 28, 64, 128 or 224 -- and ``{train,val,test}_labels``, int (N, 1). The file's own splits are
used as they are; each split is loaded when first needed and kept in memory as uint8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advmed.data.base import ClassificationDataModule
from advmed.data.classification_datasets import LabelledDataset, TensorImageDataset
from advmed.data.medmnist.medmnist_layout import FLAG_MODALITY, KEYS


class MedMNISTDataModule(ClassificationDataModule):
    """A MedMNIST 2D classification dataset (e.g. PathMNIST, PneumoniaMNIST) from its ``.npz``.

    Args:
        path: the ``.npz`` file, e.g. ``pathmnist.npz`` or ``pneumoniamnist_64.npz``.
        num_classes: classes of the dataset (labels are checked against it).
        in_channels: 1 for grayscale files, 3 for RGB ones (checked against the file).
        class_names: optional names; default "0", "1", ...
        image_size: output side; images of another size are resized (antialiased) per item.
        Other arguments: see :class:`ClassificationDataModule`.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        num_classes: int = 9,
        in_channels: int = 3,
        class_names: Sequence[str] | None = None,
        image_size: int = 28,
        seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        train_fraction: float = 1.0,
        extra_train_roots: Sequence[str] | None = None,
        augment: Mapping[str, Any] | None = None,
    ) -> None:
        # the path first: `modality` (which the augmentation built by the base needs) is read from its name
        hint = (
            "download it from https://medmnist.com (Zenodo record 10519652; e.g. pathmnist.npz, "
            "pneumoniamnist_64.npz) and set data.path=/path/to/file.npz or ADVMED_MEDMNIST_PATH"
        )
        if path is None or not str(path).strip():
            raise FileNotFoundError(f"MedMNIST .npz path is not set; {hint}")
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"MedMNIST file {self.path} does not exist; {hint}")
        super().__init__(
            num_classes=num_classes,
            class_names=class_names if class_names is not None else [str(i) for i in range(num_classes)],
            in_channels=in_channels,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            train_fraction=train_fraction,
            extra_train_roots=extra_train_roots,
            augment=augment,
        )

    @property
    def flag(self) -> str:
        """The MedMNIST set the file holds, from its name: ``pneumoniamnist_64.npz`` -> ``pneumoniamnist``."""
        return self.path.name.split(".")[0].split("_")[0].lower()

    @property
    def modality(self) -> str | None:
        return FLAG_MODALITY.get(self.flag)

    @property
    def stain(self) -> str | None:
        return "he" if self.flag == "pathmnist" else None

    def _build_split(self, split: str) -> LabelledDataset:
        with np.load(self.path, allow_pickle=False) as npz:
            missing = [key for key in KEYS if key not in npz.files]
            if missing:
                raise ValueError(
                    f"{self.path} lacks key(s) {missing} (keys present: {sorted(npz.files)}); "
                    f"a MedMNIST .npz holds {list(KEYS)} -- re-download the file"
                )
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
        return TensorImageDataset(
            self._images(images, split), self._labels(labels, len(images), split), self.image_size
        )

    def _images(self, images: np.ndarray, split: str) -> torch.Tensor:
        where = f"{self.path} {split}_images"
        if (
            images.dtype != np.uint8
            or images.ndim not in (3, 4)
            or (images.ndim == 4 and images.shape[-1] != 3)
        ):
            raise ValueError(
                f"{where}: expected uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        channels = 1 if images.ndim == 3 else 3
        if channels != self.in_channels:
            raise ValueError(
                f"{where} are {channels}-channel images but in_channels={self.in_channels}; "
                f"set data.in_channels={channels}"
            )
        tensor = torch.from_numpy(images)
        return tensor[:, None] if channels == 1 else tensor.permute(0, 3, 1, 2)

    def _labels(self, labels: np.ndarray, n_images: int, split: str) -> torch.Tensor:
        where = f"{self.path} {split}_labels"
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise ValueError(
                f"{where} has shape {labels.shape}: multi-label tasks (e.g. ChestMNIST) are not supported"
            )
        labels = labels.reshape(-1)
        if not np.issubdtype(labels.dtype, np.integer) or len(labels) != n_images:
            raise ValueError(
                f"{where}: expected {n_images} integer labels, got {labels.dtype} {labels.shape}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"{where} range over {labels.min()}..{labels.max()}, outside 0..{self.num_classes - 1} "
                f"of num_classes={self.num_classes}; set data.num_classes to the dataset's class count"
            )
        return torch.from_numpy(labels.astype(np.int64))
