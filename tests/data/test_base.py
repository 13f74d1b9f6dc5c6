"""The shared DataModule base: stratified subsets, loaders, and augmentation in training only."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from advmed.data.base import ClassificationDataModule, stratified_split
from advmed.data.classification_datasets import TensorImageDataset

FLIP_ONLY = {"hflip": 1.0, "vflip": 0.0, "rot90": 0.0, "jitter_p": 0.0}


class ToyDataModule(ClassificationDataModule):
    """Random uint8 images with unbalanced classes; split ``s`` uses generator seed ``s``."""

    COUNTS = {"train": [30, 20, 10], "val": [4, 4, 4], "test": [5, 5, 5]}

    def __init__(self, **kwargs):
        kwargs.setdefault("batch_size", 8)
        super().__init__(num_classes=3, class_names=["a", "b", "c"], in_channels=3, image_size=8, **kwargs)

    def _build_split(self, split):
        counts = self.COUNTS[split]
        labels = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
        generator = torch.Generator().manual_seed(len(split))
        images = torch.randint(0, 256, (len(labels), 3, 8, 8), dtype=torch.uint8, generator=generator)
        return TensorImageDataset(images, labels)


def test_stratified_split_keeps_fraction_of_every_class():
    labels = torch.repeat_interleave(torch.arange(3), torch.tensor([40, 20, 3]))
    selected, rest = stratified_split(labels, 0.25, seed=0)
    assert torch.bincount(labels[selected]).tolist() == [10, 5, 1]  # round(0.75) = 1: no class vanishes
    assert sorted(torch.cat([selected, rest]).tolist()) == list(range(len(labels)))


def test_stratified_split_is_seeded_and_nested():
    labels = torch.arange(200) % 4
    small, _ = stratified_split(labels, 0.1, seed=3)
    large, _ = stratified_split(labels, 0.5, seed=3)
    assert torch.equal(small, stratified_split(labels, 0.1, seed=3)[0])
    assert not torch.equal(small, stratified_split(labels, 0.1, seed=4)[0])
    assert set(small.tolist()) <= set(large.tolist())


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_train_fraction_is_rejected(fraction):
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        ToyDataModule(train_fraction=fraction)


def test_class_names_must_match_num_classes():
    with pytest.raises(ValueError, match="num_classes=3 but 2 class_names"):
        ClassificationDataModule(num_classes=3, class_names=["a", "b"], in_channels=3, image_size=8)


def test_train_fraction_subset_is_stratified_and_seeded():
    dm = ToyDataModule(train_fraction=0.5, seed=1)
    dm.setup("fit")
    assert torch.bincount(dm.train_set.targets).tolist() == [15, 10, 5]
    assert len(dm.val_set) == 12  # only the training split is subsampled
    again = ToyDataModule(train_fraction=0.5, seed=1)
    again.setup("fit")
    assert torch.equal(dm.train_set.indices, again.train_set.indices)


def test_batches_are_float_unit_range_and_int64_labels():
    dm = ToyDataModule()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_shuffling_is_seeded():
    first = [ToyDataModule(seed=s) for s in (5, 5, 6)]
    orders = [torch.cat([y for _, y in dm.train_dataloader()]) for dm in first]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])


def test_setup_builds_only_the_stage_splits():
    dm = ToyDataModule()
    dm.setup("test")
    assert dm.test_set is not None and dm.train_set is None and dm.val_set is None


class _Recorder(L.LightningModule):
    """Records the images each stage receives after the batch-transfer hooks."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen = {"train": [], "val": [], "test": []}

    def _record(self, stage, batch):
        self.seen[stage].append(batch[0].clone())
        return (self.weight * batch[0].mean()).sum()

    def training_step(self, batch, batch_idx):
        return self._record("train", batch)

    def validation_step(self, batch, batch_idx):
        self._record("val", batch)

    def test_step(self, batch, batch_idx):
        self._record("test", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _contains(images: torch.Tensor, x: torch.Tensor) -> bool:
    return bool((images == x).flatten(1).all(1).any())


def test_augmentation_applies_in_training_only():
    dm = ToyDataModule(augment=FLIP_ONLY)
    model = _Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        limit_test_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    raw = {
        split: torch.stack(
            [getattr(dm, f"{split}_set")[i][0] for i in range(len(getattr(dm, f"{split}_set")))]
        )
        for split in ("train", "val", "test")
    }
    train_images = torch.cat(model.seen["train"])
    assert len(train_images) == 16
    assert all(_contains(raw["train"], x.flip(-1)) and not _contains(raw["train"], x) for x in train_images)
    for split in ("val", "test"):  # sanity check, validation and test batches arrive untouched
        assert model.seen[split] and all(_contains(raw[split], x) for x in torch.cat(model.seen[split]))


def test_the_training_shuffle_is_a_function_of_seed_and_epoch_with_the_orders_of_a_once_seeded_loader():
    from torch.utils.data import DataLoader

    from advmed.data.base import EpochRandomSampler

    items = list(range(50))
    # What a loader seeded once drew, epoch after epoch, each epoch iterated to its end (as Lightning
    # does: its fetcher asks past the last batch, and the exhausted RandomSampler draws one more
    # permutation, which moves every later epoch).
    once_seeded = DataLoader(items, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(7))
    expected = [torch.cat(list(once_seeded)).tolist() for _ in range(4)]
    assert len({tuple(order) for order in expected}) == 4

    for epoch in (3, 0, 2, 1):  # any order of epochs: a resumed run starts anywhere
        sampler = EpochRandomSampler(items, seed=7)
        sampler.set_epoch(epoch)
        assert list(sampler) == expected[epoch] == list(sampler), epoch  # and again: iterating draws nothing


class _OnceSeededToy(ToyDataModule):
    """The training loader of advmed before the epoch-seeded sampler (commit 1b4041c)."""

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        dataset = self._require("train")
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, generator=torch.Generator().manual_seed(self.seed))


def test_lightning_fits_see_the_orders_of_the_once_seeded_loader():
    """The RNG-stream contract of the shuffle in a real fit: the figures measured before the
    epoch-seeded sampler (e.g. the demo at 1b4041c) depend on these orders, every epoch."""
    seen = []
    for datamodule in (ToyDataModule(seed=3), _OnceSeededToy(seed=3)):
        torch.manual_seed(0)  # the augmentation's draws
        model = _Recorder()
        L.Trainer(
            accelerator="cpu", max_epochs=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        ).fit(model, datamodule=datamodule)
        seen.append(torch.cat(model.seen["train"]))
    assert len(seen[0]) == 3 * 60
    assert torch.equal(seen[0], seen[1])
