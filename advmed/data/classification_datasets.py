"""The datasets of classification data and the pixel helpers they share: items ``(x float32 (C, H, W)
in [0, 1], y int64)`` with every label known up front (``targets``, for stratified splits); items of
a folder of files also have a unique ``names`` entry (the writers' file names).

Below :mod:`advmed.data.base` (the DataModule bases), as :mod:`advmed.data.segmentation_datasets` is
for segmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from advmed.data.readers import read_image


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
        if hasattr(dataset, "names"):  # item names (file names of attacked copies) survive subsetting
            self.names = [dataset.names[i] for i in self.indices.tolist()]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[int(self.indices[index])]


class ImageFolderDataset(LabelledDataset):
    """``(path, label)`` items read on access as float32 [0, 1] (in_channels, size, size) images.

    Tiles of another size are resized with antialiasing; ``size=None`` keeps them as stored.
    ``in_channels=1`` keeps one channel of the RGB the reader returns (grayscale files are read as
    gray replicated to RGB). ``names`` are ``<CLASS>/<file stem>``, unique within a class-folder dataset.
    ``images``, when given, holds the files already decoded (uint8 (H, W, 3) per item, in item order:
    :mod:`advmed.data.decoded_cache`) and replaces reading them.
    """

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        image_size: int | None = None,
        in_channels: int = 3,
        images: Sequence[Any] | None = None,
    ) -> None:
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3 for image folders, got {in_channels}")
        if images is not None and len(images) != len(items):
            raise ValueError(f"{len(images)} decoded images for {len(items)} files")
        self.images = images
        self.paths = [path for path, _ in items]
        self.targets = torch.tensor([label for _, label in items], dtype=torch.long)
        self.names = [f"{path.parent.name}/{path.stem}" for path in self.paths]
        self.image_size = image_size
        self.in_channels = in_channels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = read_image(self.paths[index]) if self.images is None else self.images[index]
        image = torch.from_numpy(array).permute(2, 0, 1)[: self.in_channels]
        return to_float_image(image, self.image_size), self.targets[index]


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
