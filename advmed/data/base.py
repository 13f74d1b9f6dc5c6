"""Shared base of the classification DataModules: splits, loaders, training subsets, GPU augmentation.

A subclass describes its dataset (names, channels, size) in ``__init__`` and implements
``_build_split(split)`` returning a :class:`LabelledDataset`; the base does the rest the same way
for every dataset: seeded stratified ``train_fraction`` subsets, seeded shuffling, and kornia
augmentation on the device during training only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from advmed.data.augmentation import build_augmentation

SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class LabelledDataset(Dataset):
    """A dataset of ``(x, y)`` pairs with its labels known up front (``targets``), for stratification."""

    targets: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.targets)


class TensorImageDataset(LabelledDataset):
    """Images held in memory as uint8 (N, C, H, W); items are float32 [0, 1] and int64 labels.

    ``image_size`` resizes each item on access (antialiased), so that a large cache is never
    duplicated at a second resolution.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, image_size: int | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = targets.long()
        self.image_size = image_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float_image(self.images[index], self.image_size), self.targets[index]


class SubsetDataset(LabelledDataset):
    """The items of ``dataset`` at ``indices`` (keeps ``targets``, unlike ``torch.utils.data.Subset``)."""

    def __init__(self, dataset: LabelledDataset, indices: torch.Tensor) -> None:
        self.dataset = dataset
        self.indices = indices.long()
        self.targets = dataset.targets[self.indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[int(self.indices[index])]


def to_float_image(image: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 (C, H, W) -> float32 [0, 1] (C, size, size), resized with antialiasing when needed."""
    x = image.float().div_(255.0)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.clamp_(0.0, 1.0)
    return x


def center_crop(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central ``size`` x ``size`` region of a (..., H, W) image; ``None`` returns it unchanged.

    An odd margin puts the extra pixel after the region (96 -> 32 keeps rows and columns 32..63,
    the centre region PCam labels refer to).
    """
    if size is None:
        return image
    height, width = image.shape[-2:]
    if not 0 < size <= min(height, width):
        raise ValueError(
            f"center_crop={size} does not fit a {height}x{width} image; use 1..{min(height, width)}"
        )
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def check_fixed_classes(
    dataset: str, expected: Sequence[str], num_classes: int, class_names: Sequence[str], in_channels: int
) -> None:
    """A dataset with fixed RGB classes accepts ``num_classes`` / ``class_names`` / ``in_channels``
    only so that its config can state them for interpolation: they must be exactly its own."""
    if list(class_names) != list(expected) or num_classes != len(expected) or in_channels != 3:
        raise ValueError(
            f"{dataset} always has the {len(expected)} RGB classes {list(expected)} in this order; "
            f"got num_classes={num_classes}, class_names={list(class_names)}, in_channels={in_channels}"
        )


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into ``(selected, rest)`` keeping ``fraction`` of every class.

    Each class keeps ``round(fraction * n_c)`` items, at least one. Per-class orders come from a
    generator seeded with ``seed`` and the selection is a prefix of them, so for one seed a smaller
    fraction selects a subset of a larger one (nested training-set-size studies). Both outputs
    are sorted.
    """
    generator = torch.Generator().manual_seed(seed)
    selected, rest = [], []
    for label in torch.unique(labels, sorted=True):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        keep = min(len(members), max(1, math.floor(fraction * len(members) + 0.5)))
        selected.append(members[:keep])
        rest.append(members[keep:])
    return torch.cat(selected).sort().values, torch.cat(rest).sort().values


class ClassificationDataModule(L.LightningDataModule):
    """Base DataModule for image classification; batches are ``(x, y)``.

    ``x`` is float32 in [0, 1] with shape (N, C, H, W); ``y`` is int64 (N,). ``num_classes``,
    ``class_names``, ``in_channels`` and ``image_size`` are set in ``__init__`` so that models can
    be built before ``setup``.

    Args:
        num_classes, class_names, in_channels, image_size: what the data holds (checked against it).
        batch_size: samples per batch for every split.
        num_workers: DataLoader worker processes (workers persist across epochs when > 0).
        pin_memory: pin host memory for faster GPU copies; ``None`` pins when CUDA is available.
        seed: seeds the training subset, the shuffling order and dataset-specific splits.
        train_fraction: keep this fraction of every class of the training split, in (0, 1].
        augment: keyword arguments of :func:`build_augmentation` (``enabled``, ``hflip``, ...).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: Sequence[str],
        in_channels: int,
        image_size: int,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_fraction: float = 1.0,
        augment: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < float(train_fraction) <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        class_names = [str(name) for name in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class_names: {class_names}")
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.seed = seed
        self.train_fraction = float(train_fraction)
        self.augmentation = build_augmentation(in_channels=self.in_channels, **dict(augment or {}))
        self.train_set: LabelledDataset | None = None
        self.val_set: LabelledDataset | None = None
        self.test_set: LabelledDataset | None = None

    def _build_split(self, split: str) -> LabelledDataset:
        """Return the full dataset of ``split`` (one of ``SPLITS``)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Build the splits this stage needs (once; later calls reuse them)."""
        for split in _STAGE_SPLITS.get(stage, SPLITS):
            self._require(split)

    def _require(self, split: str) -> LabelledDataset:
        dataset = getattr(self, f"{split}_set")
        if dataset is None:
            dataset = self._build_split(split)
            if split == "train" and self.train_fraction < 1.0:
                keep, _ = stratified_split(dataset.targets, self.train_fraction, self.seed)
                dataset = SubsetDataset(dataset, keep)
            setattr(self, f"{split}_set", dataset)
        return dataset

    def train_dataloader(self) -> DataLoader:
        dataset = self._require("train")
        return self._loader(
            dataset,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            # A last batch of one sample breaks BatchNorm in training; drop only that case.
            drop_last=len(dataset) > self.batch_size and len(dataset) % self.batch_size == 1,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require("test"))

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment on the device, in training only: val/test batches and attacks see clean images."""
        trainer = self.trainer
        if self.augmentation is None or trainer is None or not trainer.training:
            return batch
        x, y = batch
        return self.augmentation.to(x.device)(x), y


class ProceduralDataModule(ClassificationDataModule):
    """Base of the procedural datasets: balanced splits of ``<split>_per_class`` images rendered
    once, at the first ``setup`` that needs them, into a uint8 cache; image ``i`` has label
    ``i % num_classes``. A subclass sets ``CLASS_NAMES``, ``NAME``, ``MIN_SIZE`` and ``DEFAULTS``
    (its default ``image_size`` and split sizes) and implements :meth:`render` (deterministic per
    (seed, split, index)).

    Args:
        image_size: tile side in pixels, at least ``MIN_SIZE``; None: the dataset's default.
        train_per_class, val_per_class, test_per_class: images per class in each split; None: the
            dataset's default.
        seed: dataset seed (images, training subset, shuffling).
        num_classes, class_names, in_channels: fixed by the dataset; accepted so that a config can
            state them for interpolation, and checked.
        Other arguments: see :class:`ClassificationDataModule`.
    """

    CLASS_NAMES: tuple[str, ...]
    NAME: str
    MIN_SIZE: int
    DEFAULTS: dict[str, int]  # image_size, train_per_class, val_per_class, test_per_class

    def __init__(
        self,
        image_size: int | None = None,
        train_per_class: int | None = None,
        val_per_class: int | None = None,
        test_per_class: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        train_fraction: float = 1.0,
        augment: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        in_channels: int = 3,
    ) -> None:
        num_classes = len(self.CLASS_NAMES) if num_classes is None else num_classes
        class_names = self.CLASS_NAMES if class_names is None else class_names
        check_fixed_classes(self.NAME, self.CLASS_NAMES, num_classes, class_names, in_channels)
        image_size = self.DEFAULTS["image_size"] if image_size is None else image_size
        if image_size < self.MIN_SIZE:  # textures need a few pixels per structure
            raise ValueError(f"image_size must be at least {self.MIN_SIZE}, got {image_size}")
        given = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        counts = {split: self.DEFAULTS[f"{split}_per_class"] if n is None else n for split, n in given.items()}
        for split, count in counts.items():
            if count < 1:
                raise ValueError(f"{split}_per_class must be at least 1, got {count}")
        super().__init__(
            num_classes=num_classes, class_names=class_names, in_channels=in_channels, image_size=image_size,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, augment=augment,
        )
        self.per_class = counts

    def render(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        """Images ``indices`` of ``split`` as uint8 (N, 3, S, S)."""
        raise NotImplementedError

    def _build_split(self, split: str) -> LabelledDataset:
        indices = torch.arange(self.per_class[split] * self.num_classes)
        return TensorImageDataset(self.render(split, indices), indices % self.num_classes)
