"""Shared base of the segmentation DataModules (CT slices, the synthetic CT phantom); their datasets
are in :mod:`advmed.data.segmentation_datasets`.

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

from advmed.data.base import SplitDataModule
from advmed.data.copy_layouts import PNGPairLayout
from advmed.data.png_pairs import PNGPairDataset
from advmed.data.segmentation_datasets import BACKGROUND, SegmentationDataset, SegmentationSubset


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
        in_channels: image channels (1 for CT); image_size: side of the square slices the loaders yield.
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
        if len(class_names) != num_classes or num_classes < 2:
            raise ValueError(
                f"num_classes={num_classes} needs as many class_names (background first, at least one "
                f"organ); got {list(class_names)}"
            )
        if class_names[0] != BACKGROUND:
            raise ValueError(f"class_names[0] must be {BACKGROUND!r} (label id 0), got {list(class_names)}")
        super().__init__(
            num_classes=num_classes, class_names=class_names, in_channels=in_channels, image_size=image_size,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, extra_train_roots=extra_train_roots,
        )

    def _subset(self, dataset: SegmentationDataset, fraction: float) -> SegmentationDataset:
        keep, _ = group_split(dataset.groups, fraction, self.seed)
        return SegmentationSubset(dataset, keep)

    def copy_layout(self) -> PNGPairLayout:
        return PNGPairLayout()

    def _read_extra_root(self, root: str) -> SegmentationDataset:
        return PNGPairDataset.from_folder(
            root, num_classes=self.num_classes, in_channels=self.in_channels, image_size=self.image_size
        )
