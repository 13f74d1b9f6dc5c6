"""The procedural abdominal CT phantom as a segmentation data module: liver, spleen, kidneys, pancreas.

The embedded default for CT segmentation (the setting of Chen et al. 2019 and the segmentation
augmentation paper): nothing to download. The slices (anatomy, Hounsfield units, phantom patients,
determinism) are :mod:`advmed.data.ct.phantom`'s. This module checks the config (the fixed classes,
split sizes, HU window), renders each split once, windows it (level / width from the config,
abdomen 40 / 400 by default; :mod:`advmed.data.ct.hu_window`) into [0, 1] and caches 16-bit levels
(held as int32) with uint8 masks. Labels: background 0, liver 1, spleen 2, kidneys 3 (both), pancreas 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from advmed.data.base import check_count
from advmed.data.ct.hu_window import check_window, window_hu
from advmed.data.ct.phantom import CLASS_NAMES, MIN_SIZE, generate_ct_slices
from advmed.data.segmentation import SegmentationDataModule
from advmed.data.segmentation_datasets import TensorSegmentationDataset


class SyntheticCTDataModule(SegmentationDataModule):
    """Procedural abdominal CT phantom slices with liver, spleen, kidneys and pancreas masks.

    Each split is rendered once, at the first ``setup`` that needs it, into a cache of windowed
    16-bit images (int32 tensors) and uint8 masks. Splits never share slices (the split is part of every seed).
    ``groups`` are phantom patients (``slices_per_volume`` consecutive slices), so
    ``train_fraction`` keeps whole patients; slice names are ``p<patient>_z<slice>``.

    Args:
        image_size: slice side in pixels, at least ``MIN_SIZE`` (the geometry scales with it).
        train_size, val_size, test_size: slices per split.
        slices_per_volume: consecutive slices that share a phantom patient.
        window_level, window_width: display window in HU mapped onto [0, 1]; width > 0.
        num_classes, class_names: fixed by the dataset; accepted so that a config can state them
            for interpolation, and checked.
        in_channels: 1, or 3 to replicate the slice (for RGB backbones).
        Other arguments: see :class:`~advmed.data.segmentation.SegmentationDataModule`.
    """

    modality = "ct"

    NAME = "synthetic_ct"
    CLASS_NAMES = CLASS_NAMES
    MIN_SIZE = MIN_SIZE

    def __init__(
        self,
        image_size: int = 128,
        train_size: int = 400,
        val_size: int = 50,
        test_size: int = 100,
        slices_per_volume: int = 10,
        window_level: float = 40.0,
        window_width: float = 400.0,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        train_fraction: float = 1.0,
        extra_train_roots: Sequence[str] | None = None,
        num_classes: int = len(CLASS_NAMES),
        class_names: Sequence[str] = CLASS_NAMES,
        in_channels: int = 1,
    ) -> None:
        fixed = list(class_names) == list(CLASS_NAMES) and num_classes == len(CLASS_NAMES)
        if not fixed or in_channels not in (1, 3):
            raise ValueError(
                f"{self.NAME} always has the {len(CLASS_NAMES)} classes {list(CLASS_NAMES)} in this "
                f"order and 1 channel (3: replicated); got num_classes={num_classes}, "
                f"class_names={list(class_names)}, in_channels={in_channels}"
            )
        if image_size < MIN_SIZE:
            raise ValueError(f"image_size must be at least {MIN_SIZE}, got {image_size}")
        sizes = {"train": train_size, "val": val_size, "test": test_size}
        sizes = {split: check_count(f"{split}_size", count) for split, count in sizes.items()}
        check_count("slices_per_volume", slices_per_volume)
        check_window(window_level, window_width)
        super().__init__(
            num_classes=num_classes, class_names=class_names, in_channels=in_channels, image_size=image_size,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, extra_train_roots=extra_train_roots,
        )
        self.sizes = sizes
        self.slices_per_volume = int(slices_per_volume)
        self.window_level, self.window_width = float(window_level), float(window_width)

    def _build_split(self, split: str) -> TensorSegmentationDataset:
        indices = torch.arange(self.sizes[split])
        hu, masks, _ = generate_ct_slices(self.seed, split, indices, self.image_size, self.slices_per_volume)
        # 16-bit levels held as int32: torch cannot pickle uint16 tensors (spawned workers, DDP spawn).
        images = (window_hu(hu, self.window_level, self.window_width) * 65535).round_().to(torch.int32)
        images = images.expand(-1, self.in_channels, -1, -1)  # a view: 3 channels cost no memory
        groups = indices // self.slices_per_volume
        positions = (indices % self.slices_per_volume).tolist()
        names = [f"p{g:04d}_z{i:03d}" for g, i in zip(groups.tolist(), positions, strict=True)]
        return TensorSegmentationDataset(images, masks, groups, names, self.image_size)
