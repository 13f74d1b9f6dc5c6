"""Shared base of the DataModules (splits, loaders, training subsets, extra training folders) and
of the classification ones (stratified subsets, GPU augmentation); their datasets are in
:mod:`advmed.data.classification_datasets`.

A subclass describes its dataset (names, channels, size) in ``__init__`` and implements
``_build_split(split)``; the base does the rest the same way for every dataset: seeded
``train_fraction`` subsets, attacked copies from ``extra_train_roots``, seeded shuffling, and
(classification) kornia augmentation on the device during training only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler

from advmed.data.augmentation import build_augmentation
from advmed.data.classification_datasets import ImageFolderDataset, LabelledDataset, SubsetDataset
from advmed.data.copy_layouts import ClassFolderLayout, CopyLayout
from advmed.data.readers import scan_class_folders

SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


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


class SplitDataModule(L.LightningDataModule):
    """What every advmed DataModule shares: train/val/test splits built once on first use, seeded
    shuffling, loaders, and the training-set options ``train_fraction`` and ``extra_train_roots``.

    A subclass implements ``_build_split(split)`` (the full dataset of a split),
    ``_subset(dataset, fraction)`` (the seeded part of the training set that ``train_fraction``
    keeps: by class for classification, by volume for segmentation) and ``_read_extra_root(root)``
    (an extra training folder in the layout ``python -m advmed.augment`` writes for it).

    A subclass whose three splits are drawn together from one pool (NCT-CRC-HE, HCD) implements
    ``_build_splits()`` instead of ``_build_split``; it runs once and its result is kept.

    Args:
        num_classes, class_names, in_channels, image_size: what the data holds (``len(class_names)``
            must be ``num_classes``); set here so that models can be built before ``setup``.
        batch_size: samples per batch for every split.
        num_workers: DataLoader worker processes (workers persist across epochs when > 0).
        pin_memory: pin host memory for faster GPU copies; ``None`` pins when CUDA is available.
        seed: seeds the training subset, the shuffling order and dataset-specific splits.
        train_fraction: keep this fraction of the training split, in (0, 1].
        extra_train_roots: folders written by ``python -m advmed.augment`` (attacked copies of a
            training set); their images are added to the training split (after ``train_fraction``).

    Class attributes a subclass sets: ``modality`` (``histology``, ``ct``, ``xray``: which natural
    corruptions apply, :mod:`advmed.corruptions`) and ``stain`` (``he`` for H&E tiles: the stain
    shifts apply); None where the data has none of them.
    """

    modality: str | None = None
    stain: str | None = None

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
        extra_train_roots: Sequence[str] | None = None,
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
        self.extra_train_roots = [str(root) for root in extra_train_roots or ()]
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._drawn_splits: dict[str, Dataset] | None = None

    def _build_split(self, split: str) -> Dataset:
        """Return the full dataset of ``split`` (one of ``SPLITS``); by default the one of
        ``_build_splits()``, which runs once."""
        if self._drawn_splits is None:
            self._drawn_splits = self._build_splits()
        return self._drawn_splits[split]

    def _build_splits(self) -> dict[str, Dataset]:
        """Return the full dataset of every split, drawn together (see the class docstring)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _build_split nor _build_splits")

    def _subset(self, dataset: Dataset, fraction: float) -> Dataset:
        """The seeded ``fraction`` of the training set that ``train_fraction`` keeps."""
        raise NotImplementedError

    def _read_extra_root(self, root: str) -> Dataset:
        """The training items of one ``extra_train_roots`` folder."""
        raise NotImplementedError

    def extra_train_datasets(self) -> list[Dataset]:
        """The items of each ``extra_train_roots`` folder, in order (what training adds to the split)."""
        return [self._read_extra_root(root) for root in self.extra_train_roots]

    def copy_layout(self) -> CopyLayout:
        """How ``python -m advmed.augment`` stores an item of an attacked copy: the layout that
        ``_read_extra_root`` reads back (:mod:`advmed.data.copy_layouts`)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not say how to write a copy of its data: implement copy_layout()"
        )

    def full_split(self, split: str) -> Dataset:
        """``split`` as the dataset defines it, before ``train_fraction`` and ``extra_train_roots``:
        what ``python -m advmed.augment`` makes attacked copies of."""
        return self._build_split(split)

    def setup(self, stage: str | None = None) -> None:
        """Build the splits this stage needs (once; later calls reuse them)."""
        for split in _STAGE_SPLITS.get(stage, SPLITS):
            self._require(split)

    def _require(self, split: str) -> Dataset:
        dataset = getattr(self, f"{split}_set")
        if dataset is None:
            dataset = self._build_split(split)
            if split == "train":
                if self.train_fraction < 1.0:
                    dataset = self._subset(dataset, self.train_fraction)
                extras = self.extra_train_datasets()
                dataset = concat_datasets([dataset, *extras]) if extras else dataset
            setattr(self, f"{split}_set", dataset)
        return dataset

    def train_dataloader(self) -> DataLoader:
        dataset = self._require("train")
        return self._loader(
            dataset,
            sampler=EpochRandomSampler(dataset, self.seed),
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds
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


class EpochRandomSampler(RandomSampler):
    """A shuffle that is a function of ``(seed, epoch)`` alone, giving the orders of earlier advmed
    versions (a loader whose generator was seeded once with ``seed``).

    Lightning calls ``set_epoch`` before every epoch, so a run resumed from a checkpoint at epoch
    ``e`` draws the order the uninterrupted run drew; a generator seeded once would restart at
    epoch 0's order. Epoch ``e``'s order replays what the once-seeded generator drew before it, per
    epoch: the loader iterator's base seed, the permutation, and a second permutation that torch's
    ``RandomSampler`` draws when the epoch's iterator runs out (``randperm(n)[:num_samples % n]``,
    empty but drawn; Lightning's fetcher always asks past the last batch). Missing that draw moved
    every run's order from epoch 1 on (issue 20). A ``RandomSampler`` still, so that under DDP
    Lightning swaps it for its (equally epoch-seeded) ``DistributedSampler``.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        super().__init__(dataset)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        n = len(self.data_source)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epoch):  # ~2.6 ms per replayed epoch for 100k items
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # that epoch's iterator seed
            torch.randperm(n, generator=generator)  # its order
            torch.randperm(n, generator=generator)  # the empty tail drawn when its iterator ran out
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        yield from torch.randperm(n, generator=generator).tolist()


class ConcatLabelledDataset(ConcatDataset):
    """``ConcatDataset`` that keeps the attributes the datasets share: ``targets`` (labels, for
    stratification), ``groups`` (volume ids), ``names`` (item names, for writers)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        super().__init__(datasets)
        if all(hasattr(d, "targets") for d in datasets):
            self.targets = torch.cat([d.targets for d in datasets])
        if all(hasattr(d, "groups") for d in datasets):
            # Groups of different parts never merge: offset each part past the previous ones.
            offsets, parts = 0, []
            for d in datasets:
                parts.append(d.groups + offsets)
                offsets += int(d.groups.max()) + 1 if len(d.groups) else 0
            self.groups = torch.cat(parts)
        if all(hasattr(d, "names") for d in datasets):
            self.names = [name for d in datasets for name in d.names]


def concat_datasets(datasets: Sequence[Dataset]) -> Dataset:
    """One dataset of all items of ``datasets``, in order."""
    return datasets[0] if len(datasets) == 1 else ConcatLabelledDataset(datasets)


class ClassificationDataModule(SplitDataModule):
    """Base DataModule for image classification; batches are ``(x, y)``.

    ``x`` is float32 in [0, 1] with shape (N, C, H, W); ``y`` is int64 (N,). ``num_classes``,
    ``class_names``, ``in_channels`` and ``image_size`` are set in ``__init__`` so that models can
    be built before ``setup``. ``train_fraction`` keeps that fraction of every class (stratified,
    seeded); an ``extra_train_roots`` folder has the ``<root>/<CLASS>/<image>`` layout.

    Args:
        augment: keyword arguments of :func:`build_augmentation` (``enabled``, ``hflip``, ...).
        Other arguments: see :class:`SplitDataModule`.
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
        extra_train_roots: Sequence[str] | None = None,
        augment: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes, class_names=class_names, in_channels=in_channels, image_size=image_size,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, extra_train_roots=extra_train_roots,
        )
        self.augmentation = build_augmentation(in_channels=self.in_channels, modality=self.modality,
                                               **dict(augment or {}))

    def _subset(self, dataset: LabelledDataset, fraction: float) -> LabelledDataset:
        keep, _ = stratified_split(dataset.targets, fraction, self.seed)
        return SubsetDataset(dataset, keep)

    def copy_layout(self) -> ClassFolderLayout:
        return ClassFolderLayout(self.class_names)

    def _read_extra_root(self, root: str) -> LabelledDataset:
        return ImageFolderDataset(scan_class_folders(root, self.class_names, strict=False), self.image_size, self.in_channels)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment on the device, in training only: val/test batches and attacks see clean images."""
        trainer = self.trainer
        if self.augmentation is None or trainer is None or not trainer.training:
            return batch
        x, y = batch
        return self.augmentation.to(x.device)(x), y


class FixedClassesDataModule(ClassificationDataModule):
    """Base of the classification datasets whose RGB classes are fixed (NCT-CRC-HE, PCam, HCD and
    the procedural sets). A subclass sets ``NAME`` (for messages) and ``CLASS_NAMES``; its config
    states ``num_classes``, ``class_names`` and ``in_channels`` for interpolation only, so they are
    checked to be exactly the dataset's (``None``: the dataset's own)."""

    NAME: ClassVar[str]
    CLASS_NAMES: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        in_channels: int = 3,
        **kwargs: Any,
    ) -> None:
        num_classes = len(self.CLASS_NAMES) if num_classes is None else num_classes
        class_names = self.CLASS_NAMES if class_names is None else class_names
        check_fixed_classes(self.NAME, self.CLASS_NAMES, num_classes, class_names, in_channels)
        super().__init__(num_classes=num_classes, class_names=class_names, in_channels=in_channels, **kwargs)


def check_fraction(name: str, value: float) -> float:
    """A share of a split drawn from another (``val_fraction``, ...): strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def check_count(name: str, value: int | None, minimum: int = 1, allow_none: bool = False) -> int | None:
    """A number of items (tiles per class, split sizes): an int of at least ``minimum``, or ``None``
    where ``allow_none`` (meaning "all" / "the rest")."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a whole number, or null" if allow_none else "a whole number"
        raise ValueError(f"{name} must be at least {minimum} ({kind}), got {value!r}")
    return value
