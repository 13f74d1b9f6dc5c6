"""Shared base of the segmentation DataModules (CT slices, the synthetic CT phantom) and their datasets.

Batches are ``(x, y)``: ``x`` float32 in [0, 1], (N, C, H, W) (CT windowed by the data module,
DESIGN contract 1); ``y`` int64 label ids, (N, H, W), 0 = background. ``class_names[0]`` is
``"background"``. Every item belongs to a *group* (its volume / patient): ``train_fraction``
keeps a seeded share of the groups, never of the slices, so that slices of one patient are never
split between what is kept and what is not. Items have unique ``names``, which the dataset
writer of ``python -m advmed.augment`` uses as file names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from advmed.data.base import SplitDataModule
from advmed.data.copy_layouts import PNGPairLayout

BACKGROUND = "background"


class SegmentationDataset(Dataset):
    """Items ``(x float32 (C, H, W) in [0, 1], y int64 (H, W))`` with per-item ``groups`` (int64,
    the volume / patient id) and unique ``names``."""

    groups: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.groups)


def to_float_intensity(image: torch.Tensor) -> torch.Tensor:
    """uint8 / uint16 (scaled by their full range) or float (kept) -> float32 [0, 1]."""
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    if image.dtype in (torch.uint16, torch.int32):  # 16-bit PNGs decode as uint16 or int32
        return image.float().div_(65535.0)
    return image.float()


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a float (C, H, W) image (bilinear, antialiased) and its (H, W) label map (nearest,
    so that no new label ids appear) to ``size`` x ``size``; ``None`` keeps them."""
    if size is None or tuple(image.shape[-2:]) == (size, size):
        return image, mask
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest-exact")[0, 0]
    return image.clamp_(0.0, 1.0), mask.long()


class TensorSegmentationDataset(SegmentationDataset):
    """Slices held in memory (decoded once): ``images`` (N, C, H, W) uint8, 16-bit levels (int32;
    torch cannot pickle uint16 tensors, which spawned workers need) or float in [0, 1], ``masks``
    (N, H, W) integer label ids; resized on access to ``image_size``."""

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        groups: torch.Tensor | None = None,
        names: Sequence[str] | None = None,
        image_size: int | None = None,
    ) -> None:
        if images.ndim != 4 or masks.ndim != 3 or len(images) != len(masks) or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(
                f"images must be (N, C, H, W) and masks (N, H, W) of the same N, H, W; got "
                f"{tuple(images.shape)} and {tuple(masks.shape)}"
            )
        n = len(images)
        self.images = images
        self.masks = masks
        self.groups = torch.arange(n) if groups is None else torch.as_tensor(groups, dtype=torch.long)
        self.names = [f"{i:06d}" for i in range(n)] if names is None else [str(name) for name in names]
        if len(self.groups) != n or len(self.names) != n:
            raise ValueError(f"{n} slices but {len(self.groups)} groups and {len(self.names)} names")
        self.image_size = image_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return resize_pair(to_float_intensity(self.images[index]), self.masks[index].long(), self.image_size)


class SegmentationSubset(SegmentationDataset):
    """The items of ``dataset`` at ``indices``, keeping ``groups`` and ``names``."""

    def __init__(self, dataset: SegmentationDataset, indices: torch.Tensor) -> None:
        self.dataset = dataset
        self.indices = indices.long()
        self.groups = dataset.groups[self.indices]
        self.names = [dataset.names[i] for i in self.indices.tolist()]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[int(self.indices[index])]


def group_split(groups: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split item indices into ``(selected, rest)`` by whole groups: ``round(fraction * n_groups)``
    groups (at least one), drawn with ``seed``. A smaller fraction selects a subset of a larger
    one for the same seed. Both outputs are sorted."""
    unique = torch.unique(groups, sorted=True)
    order = unique[torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))]
    keep = min(len(unique), max(1, int(fraction * len(unique) + 0.5)))
    selected = torch.isin(groups, order[:keep])
    return torch.nonzero(selected).flatten(), torch.nonzero(~selected).flatten()


class SegmentationDataModule(SplitDataModule):
    """Base DataModule for semantic segmentation (see the module docstring for the batch format).

    An ``extra_train_roots`` folder is a PNG-pair folder (``images/``, ``masks/`` with label ids)
    as ``python -m advmed.augment`` writes it.

    Args:
        num_classes: label ids 0..num_classes-1, background included.
        class_names: one name per label id, ``"background"`` first.
        in_channels: image channels (1 for CT).
        image_size: side of the square slices the loaders yield.
        Other arguments: see :class:`~advmed.data.base.SplitDataModule`.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: Sequence[str],
        in_channels: int,
        image_size: int,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_fraction: float = 1.0,
        extra_train_roots: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, extra_train_roots=extra_train_roots,
        )
        class_names = [str(name) for name in class_names]
        if len(class_names) != num_classes or num_classes < 2:
            raise ValueError(
                f"num_classes={num_classes} needs as many class_names (background first, at least one "
                f"organ); got {class_names}"
            )
        if class_names[0] != BACKGROUND:
            raise ValueError(f"class_names[0] must be {BACKGROUND!r} (label id 0), got {class_names}")
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)

    def _subset(self, dataset: SegmentationDataset, fraction: float) -> SegmentationDataset:
        keep, _ = group_split(dataset.groups, fraction, self.seed)
        return SegmentationSubset(dataset, keep)

    def copy_layout(self) -> PNGPairLayout:
        return PNGPairLayout()

    def _read_extra_root(self, root: str) -> SegmentationDataset:
        from advmed.data.png_pairs import PNGPairDataset  # png_pairs builds on this module

        return PNGPairDataset.from_folder(
            root, num_classes=self.num_classes, in_channels=self.in_channels, image_size=self.image_size
        )
