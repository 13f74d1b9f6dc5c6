"""Kaggle Histopathologic Cancer Detection (HCD): PCam tiles as TIFF files with a label CSV.

On-disk layout, as unzipped from the Kaggle competition ``histopathologic-cancer-detection``:
``<root>/train/<id>.tif`` (96x96 RGB uint8 TIFF), ``<root>/train_labels.csv`` with columns
``id,label`` (label 1 = metastatic tissue in the centre 32x32 region, as in PCam) and
``<root>/test/<id>.tif`` without labels. The labelled tiles are split here, by a seeded
stratified draw, into disjoint test / val / train sets of fixed sizes (by default the SNAP
paper's 8,000 train / 2,000 val, plus 2,000 test); the unlabelled ``test/`` tiles are the predict
split. Tiles are read lazily, one file per item, with :func:`advmed.data.readers.read_image`, or,
with ``cache_dir``, from a decoded cache of ``train/`` and ``test/`` (:mod:`advmed.data.decoded_cache`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from advmed.data.base import FixedClassesDataModule, check_count
from advmed.data.classification_datasets import LabelledDataset, SubsetDataset
from advmed.data.lymph_node.hcd_layout import (
    DOWNLOAD_HINT,
    LABELS_CSV,
    mismatches,
    read_label_csv,
    tile_files,
)
from advmed.data.lymph_node.pcam import CLASS_NAMES, check_center_crop, tile_to_image
from advmed.data.readers import existing_folder, read_image

MISMATCH_POLICIES = ("fail", "skip")


class TileFileDataset(LabelledDataset):
    """Labelled tile files read on access as float32 [0, 1] (3, size, size) images, int64 labels.

    ``center_crop`` keeps the central region before resizing to ``image_size`` (antialiased).
    ``ids`` are the file stems (Kaggle ids), in item order. ``images``, when given, holds the files
    already decoded (uint8 (96, 96, 3) per item, in item order) and replaces reading them.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        targets: torch.Tensor,
        image_size: int | None = None,
        center_crop: int | None = None,
        images: Sequence[np.ndarray] | None = None,
    ) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} tile files but {len(targets)} labels")
        if images is not None and len(images) != len(paths):
            raise ValueError(f"{len(images)} decoded tiles for {len(paths)} tile files")
        self.images = images
        self.paths = list(paths)
        self.ids = [path.stem for path in self.paths]
        self.targets = targets.long()
        self.image_size = image_size
        self.center_crop = center_crop

    def load(self, index: int) -> torch.Tensor:
        """The image of item ``index`` (float32 [0, 1], (3, image_size, image_size))."""
        tile = read_image(self.paths[index]) if self.images is None else self.images[index]
        return tile_to_image(tile, self.center_crop, self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.load(index), self.targets[index]


class UnlabelledTileDataset(Dataset):
    """Tile files without labels (Kaggle ``test/``): items are images only, float32 [0, 1] (3, size, size).

    ``ids[i]`` is the Kaggle id of item ``i`` (files sorted by name), to pair predictions with ids.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        image_size: int | None = None,
        center_crop: int | None = None,
        images: Sequence[np.ndarray] | None = None,
    ):
        self.tiles = TileFileDataset(
            paths, torch.zeros(len(paths), dtype=torch.long), image_size, center_crop, images
        )
        self.ids = self.tiles.ids

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tiles.load(index)


class HCDDataModule(FixedClassesDataModule):
    """Kaggle Histopathologic Cancer Detection, split into fixed-size stratified test / val / train sets.

    The labelled tiles (sorted by id) are drawn, seeded by ``seed`` and keeping the class
    proportions, first into the test set, then the val set, then the train set, so the test and
    val sets do not change when only ``train_size`` (or ``train_fraction``) changes.

    ``predict_dataloader`` yields batches of images only, float32 [0, 1] (N, 3, image_size,
    image_size), from the unlabelled ``test/`` folder in file-name order, unshuffled: prediction
    ``i`` belongs to ``predict_set.ids[i]`` (a Kaggle id). The folder is optional; without it only
    prediction fails, with a clear error.

    Args:
        root: folder holding ``train/``, ``train_labels.csv`` and optionally ``test/``.
        train_size: labelled tiles in the train split; ``None`` = every tile not in test or val.
        val_size: labelled tiles in the val split.
        test_size: labelled tiles in the (labelled) test split.
        image_size: output side in pixels (224 as in the SNAP paper; 96 = native).
        center_crop: ``None``, or keep the central ``center_crop`` pixels before resizing
            (32 = exactly the region the label refers to).
        cache_dir: ``None`` reads the tiles one by one; a folder keeps there a decoded cache of
            ``train/`` (every tile) and ``test/``, built on first use with ``num_workers`` processes
            and rebuilt when a folder changes. Items are the same, bit for bit.
        on_mismatch: CSV ids without a file and files without a CSV row are reported with their
            count and first names; ``"fail"`` raises, ``"skip"`` warns and drops them.
        num_classes, class_names, in_channels: fixed by the dataset; accepted for config
            interpolation and checked.
        Other arguments: see :class:`~advmed.data.base.ClassificationDataModule`.
    """

    modality = "histology"
    stain = "he"

    NAME = "Histopathologic Cancer Detection"
    CLASS_NAMES = CLASS_NAMES

    def __init__(
        self,
        root: str | Path | None = None,
        train_size: int | None = 8000,
        val_size: int = 2000,
        test_size: int = 2000,
        image_size: int = 224,
        center_crop: int | None = None,
        cache_dir: str | Path | None = None,
        on_mismatch: str = "fail",
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
        self.test_size = check_count("test_size", test_size)
        self.val_size = check_count("val_size", val_size)
        self.train_size = check_count("train_size", train_size, allow_none=True)
        if on_mismatch not in MISMATCH_POLICIES:
            raise ValueError(f"on_mismatch must be one of {list(MISMATCH_POLICIES)}, got {on_mismatch!r}")
        self.on_mismatch = on_mismatch
        self.root = existing_folder(root, "Histopathologic Cancer Detection", DOWNLOAD_HINT)
        self.cache_dir = cache_dir
        self.predict_set: UnlabelledTileDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build the splits this stage needs; ``"predict"`` builds only the unlabelled test/ tiles."""
        if stage == "predict":
            self._require_predict()
        else:
            super().setup(stage)

    def _build_splits(self) -> dict[str, LabelledDataset]:
        """Scan train/ and the CSV once, then draw test, val and train (in this order)."""
        full = self._labelled_tiles()
        self._check_sizes(len(full))
        test, val, train = stratified_draw(
            full.targets, (self.test_size, self.val_size, self.train_size), self.seed
        )
        return {
            name: SubsetDataset(full, idx) for name, idx in (("train", train), ("val", val), ("test", test))
        }

    def _labelled_tiles(self) -> TileFileDataset:
        folder = self.root / "train"
        if not folder.is_dir():
            raise FileNotFoundError(f"{self.root} has no train/ folder of labelled tiles. {DOWNLOAD_HINT}")
        labels = read_label_csv(self.root / LABELS_CSV)
        files = tile_files(folder)
        labels = self._reconcile(labels, files, folder)
        ids = sorted(labels)  # the split then depends on the ids only, not on the CSV row order
        targets = torch.tensor([labels[i] for i in ids], dtype=torch.long)
        paths = [files[i] for i in ids]
        return TileFileDataset(paths, targets, self.image_size, self.center_crop, self._decoded(folder, files, paths))

    def _decoded(self, folder: Path, files: dict[str, Path], keep: list[Path]) -> Sequence[np.ndarray] | None:
        """The decoded tiles of ``keep`` from the cache of every tile of ``folder`` (so that the CSV,
        or ``on_mismatch``, can change without a rebuild); ``None`` without ``cache_dir``."""
        # Imported here: see NCTCRCHEDataModule._folder_dataset.
        from advmed.data.decoded_cache import decoded_images

        every = [files[i] for i in sorted(files)]
        return decoded_images(folder, every, self.cache_dir, self.num_workers, keep=keep)

    def _reconcile(self, labels: dict[str, int], files: dict[str, Path], folder: Path) -> dict[str, int]:
        """Report CSV ids without a file and files without a CSV row; fail, or warn and drop them."""
        parts = mismatches(labels, files, folder)
        if not parts:
            return labels
        report = "; ".join(parts)
        if self.on_mismatch == "fail":
            raise ValueError(
                f"{report}. Re-extract the dataset, or set data.on_mismatch=skip to drop them with a warning"
            )
        warnings.warn(f"{report}; dropped (data.on_mismatch=skip)", UserWarning, stacklevel=2)
        kept = {i: label for i, label in labels.items() if i in files}
        if not kept:
            raise ValueError(f"no labelled tile is left in {self.root} after dropping the mismatches")
        return kept

    def _check_sizes(self, available: int) -> None:
        requested = self.test_size + self.val_size + (self.train_size or 0)
        sizes = f"test_size={self.test_size} + val_size={self.val_size}"
        if self.train_size is not None and requested > available:
            raise ValueError(
                f"{sizes} + train_size={self.train_size} = {requested} tiles, but {self.root} has only "
                f"{available} labelled tiles; lower data.train_size / data.val_size / data.test_size "
                "(data.train_size=null takes every remaining tile)"
            )
        if self.train_size is None and requested >= available:
            raise ValueError(
                f"{sizes} = {requested} tiles leave none of the {available} labelled tiles of {self.root} "
                "for training; lower data.val_size / data.test_size"
            )

    def _require_predict(self) -> UnlabelledTileDataset:
        if self.predict_set is None:
            folder = self.root / "test"
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{self.root} has no test/ folder: prediction reads the unlabelled Kaggle test tiles "
                    "from <root>/test/*.tif; unzip them there (training and testing do not need them)"
                )
            files = tile_files(folder)
            paths = [files[i] for i in sorted(files)]
            self.predict_set = UnlabelledTileDataset(
                paths, self.image_size, self.center_crop, self._decoded(folder, files, paths)
            )
        return self.predict_set

    def predict_dataloader(self) -> DataLoader:
        """Batches of unlabelled test/ images (N, 3, size, size), in ``predict_set.ids`` order."""
        return self._loader(self._require_predict())


def stratified_draw(labels: torch.Tensor, sizes: Sequence[int | None], seed: int) -> list[torch.Tensor]:
    """Disjoint index sets of the given sizes (``None``: all that is left), each keeping class proportions.

    Every class is shuffled once (seeded) and the draws take consecutive segments of it, in the
    order of ``sizes``: earlier draws do not depend on later sizes. A draw's per-class counts are
    its size shared in proportion to the tiles left per class (largest remainders, exact total).
    Outputs are sorted. Raises if a size exceeds the tiles left.
    """
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels, sorted=True)
    orders = []
    for label in classes:
        members = torch.nonzero(labels == label).flatten()
        orders.append(members[torch.randperm(len(members), generator=generator)])
    left = torch.tensor([len(order) for order in orders])
    start = torch.zeros_like(left)
    draws = []
    for size in sizes:
        take = left.clone() if size is None else _proportional_counts(size, left)
        draws.append(
            torch.cat([o[s : s + t] for o, s, t in zip(orders, start.tolist(), take.tolist())]).sort().values
        )
        start += take
        left -= take
    return draws


def _proportional_counts(size: int, available: torch.Tensor) -> torch.Tensor:
    total = int(available.sum())
    if size > total:
        raise ValueError(f"cannot draw {size} items from {total}")
    # Integer arithmetic keeps the allocation exact: floor shares, then +1 for the largest remainders
    # (a class with a remainder has a floor below its availability, so it never overflows).
    counts = available * size // total
    remainders = available * size % total
    order = sorted(range(len(available)), key=lambda c: -int(remainders[c]))
    for c in order[: size - int(counts.sum())]:
        counts[c] += 1
    return counts
