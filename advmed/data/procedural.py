"""Base of the procedural datasets (``synthetic_histology``, ``synthetic_lymph_node``): balanced
splits rendered once into a uint8 cache, deterministic per (seed, split, index)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from advmed.data.base import FixedClassesDataModule, check_count
from advmed.data.classification_datasets import LabelledDataset, TensorImageDataset


class ProceduralDataModule(FixedClassesDataModule):
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
        extra_train_roots: Sequence[str] | None = None,
        augment: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        in_channels: int = 3,
    ) -> None:
        image_size = self.DEFAULTS["image_size"] if image_size is None else image_size
        if image_size < self.MIN_SIZE:  # textures need a few pixels per structure
            raise ValueError(f"image_size must be at least {self.MIN_SIZE}, got {image_size}")
        super().__init__(
            num_classes=num_classes, class_names=class_names, in_channels=in_channels, image_size=image_size,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, extra_train_roots=extra_train_roots, augment=augment,
        )
        given = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        self.per_class = {
            split: check_count(f"{split}_per_class", self.DEFAULTS[f"{split}_per_class"] if n is None else n)
            for split, n in given.items()
        }

    def render(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        """Images ``indices`` of ``split`` as uint8 (N, 3, S, S)."""
        raise NotImplementedError

    def _build_split(self, split: str) -> LabelledDataset:
        indices = torch.arange(self.per_class[split] * self.num_classes)
        return TensorImageDataset(self.render(split, indices), indices % self.num_classes)
