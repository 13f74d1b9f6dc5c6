"""A tiny ResNet18 ClassifierModule checkpoint on 16 px synthetic histology, for the modules and attacks
that attack a frozen classifier (AdvGAN), trained in seconds on a CPU (built once per test run by the tests
that need it: :mod:`tests.shared_artifacts`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from advmed.data.histology.synthetic_histology import CLASS_NAMES, SyntheticHistologyDataModule
from advmed.models.classifier import ClassifierModule

SIZE = 16


def data(**kwargs) -> SyntheticHistologyDataModule:
    """Eight training tiles per class (72, two batches of 36), two per class in val and test, no augmentation."""
    args = dict(image_size=SIZE, train_per_class=8, val_per_class=2, test_per_class=2, batch_size=36,
                augment={"enabled": False})
    return SyntheticHistologyDataModule(**{**args, **kwargs})


def trainer(root: Path, epochs: int, **kwargs) -> L.Trainer:
    args = dict(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, default_root_dir=root, deterministic=True,
                inference_mode=False)
    return L.Trainer(**{**args, **kwargs})


def recalibrate_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Set every batch-norm layer's running statistics to those of ``x`` (cumulative average): after a
    handful of steps the default momentum leaves them far behind the weights and eval mode misclassifies."""
    for layer in model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for layer in model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.momentum = 0.1
    model.eval()


def train_classifier(root: Path) -> Path:
    """A ResNet18 fitted for eight steps, its batch-norm statistics recalibrated on the training tiles
    (about 95 % training and 50 % test accuracy, chance 11 %); returns its checkpoint."""
    L.seed_everything(0)
    model = ClassifierModule(arch="resnet18", num_classes=9, in_channels=3, class_names=list(CLASS_NAMES),
                             image_size=SIZE, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3}, scheduler=None)
    tiles = data()
    fit = trainer(root, 4, limit_val_batches=0)
    fit.fit(model, datamodule=tiles)
    recalibrate_batch_norm(model, torch.stack([tiles.train_set[i][0] for i in range(len(tiles.train_set))]))
    path = root / "classifier.ckpt"
    fit.save_checkpoint(path)
    return path


