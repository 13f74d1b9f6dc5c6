"""A tiny in-memory segmentation dataset for module tests: bright discs (class 1) and dark squares
(class 2) on noisy gray, one 'volume' per 4 slices. Deterministic by seed."""

from __future__ import annotations

import torch

from advmed.data.segmentation import SegmentationDataModule
from advmed.data.segmentation_datasets import TensorSegmentationDataset

CLASS_NAMES = ["background", "disc", "square"]


def toy_slices(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = 0.5 + 0.05 * torch.randn(n, 1, size, size, generator=g)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=g).tolist()
        r = size // 6
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        sy, sx = torch.randint(0, size - r, (2,), generator=g).tolist()
        square = torch.zeros(size, size, dtype=torch.bool)
        square[sy : sy + r, sx : sx + r] = True
        if i % 3 == 2:  # some slices lack the square: absent organs happen
            square[:] = False
        masks[i][square] = 2
        masks[i][disc] = 1
        images[i, 0][disc] += 0.3
        images[i, 0][square & ~disc] -= 0.3
    return images.clamp(0, 1), masks


class ToySegmentationDataModule(SegmentationDataModule):
    def __init__(self, size: int = 32, n: int = 48, batch_size: int = 8, **kwargs) -> None:
        super().__init__(num_classes=3, class_names=CLASS_NAMES, in_channels=1, image_size=size, batch_size=batch_size, **kwargs)
        self.n = n

    def _build_split(self, split: str) -> TensorSegmentationDataset:
        offset = {"train": 0, "val": 1, "test": 2}[split]
        n = self.n if split == "train" else max(8, self.n // 4)
        images, masks = toy_slices(n, self.image_size, seed=100 * offset + self.seed)
        groups = torch.arange(n) // 4
        return TensorSegmentationDataset(images, masks, groups, [f"{split}{i:03d}" for i in range(n)])
