"""The datasets of segmentation data and the pixel helpers they share: items ``(x float32 (C, H, W)
in [0, 1], y int64 (H, W))`` with a group (volume / patient) and a unique name per item.

Below both :mod:`advmed.data.segmentation` (the DataModule base) and :mod:`advmed.data.png_pairs`
(a dataset of PNG files), which import it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

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
