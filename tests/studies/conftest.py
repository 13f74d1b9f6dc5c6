"""Fixtures of the study tests: a tiny synthetic histology split and a classifier trained on it
for a few Lightning steps (imperfect on purpose: the study needs misclassified images and a
spread of confidences). lr 1e-3: at 3e-3 the 4 epochs end near chance on some CPUs, with no
image that a small eps flips."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from advmed.data.histology.synthetic_histology import SyntheticHistologyDataModule
from advmed.models import ClassifierModule, load_classifier
from tests.shared_artifacts import build_once

# Small enough to train and attack in seconds on a CPU; also used by the entry-point test.
TINY_DATA = {"image_size": 32, "train_per_class": 16, "val_per_class": 2, "test_per_class": 4, "batch_size": 24}


@pytest.fixture(scope="session")
def histology() -> SyntheticHistologyDataModule:
    datamodule = SyntheticHistologyDataModule(seed=0, **TINY_DATA)
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


@pytest.fixture(scope="session")
def trained_checkpoint(histology, tmp_path_factory) -> Path:
    """best.ckpt of a ResNet18 trained for 24 steps, written by Lightning as advmed.train does."""
    torch.manual_seed(0)
    module = ClassifierModule(
        "resnet18", num_classes=histology.num_classes, class_names=histology.class_names,
        image_size=histology.image_size, optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3},
    )

    def fit(root: Path) -> Path:
        trainer = L.Trainer(
            max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", filename="best", monitor="val/acc", mode="max")],
        )
        trainer.fit(module, datamodule=histology)
        return root / "checkpoints" / "best.ckpt"

    return build_once(tmp_path_factory, "study_classifier", fit)


@pytest.fixture(scope="session")
def trained_classifier(trained_checkpoint, histology) -> ClassifierModule:
    return load_classifier(trained_checkpoint, num_classes=histology.num_classes, in_channels=histology.in_channels)
