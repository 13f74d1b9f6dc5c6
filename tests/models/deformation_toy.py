"""A tiny U-Net checkpoint and deformation attackers on the toy segmentation data, shared by the
attacker's module, attack and entry-point tests (trained in seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from advmed.callbacks import BestCheckpoint
from advmed.models.deformation import DeformationAttackerModule
from advmed.models.segmentation import SegmentationModule
from tests.models.segmentation_toy import CLASS_NAMES, ToySegmentationDataModule

SIZE = 32
# Tiny networks; a faster optimiser than the paper's RMSProp 1e-4 so a few dozen steps show the trend.
ATTACKER = dict(num_classes=3, in_channels=1, class_names=CLASS_NAMES, image_size=SIZE, base_width=8, depth=2,
                latent_channels=4, critic_width=8, critic_depth=3,
                generator_optimizer={"_target_": "torch.optim.Adam", "lr": 3e-3},
                critic_optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})


def trainer(root: Path, epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=root, deterministic=True, inference_mode=False,
                     **kwargs)


def train_unet(root: Path) -> Path:
    """A U-Net that segments the toy discs and squares; returns its best.ckpt."""
    L.seed_everything(0)
    model = SegmentationModule(num_classes=3, in_channels=1, class_names=CLASS_NAMES, image_size=SIZE, base_width=8,
                               depth=2, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-2})
    checkpoint = BestCheckpoint(dirpath=root / "unet", filename="best")
    trainer(root, 6, callbacks=[checkpoint]).fit(model, datamodule=ToySegmentationDataModule(n=32))
    return Path(checkpoint.best_model_path)


def attacker(unet_ckpt: Path, **kwargs) -> DeformationAttackerModule:
    return DeformationAttackerModule(str(unet_ckpt), **{**ATTACKER, **kwargs})


def train_attacker(root: Path, unet_ckpt: Path, epochs: int = 4, **kwargs) -> tuple[DeformationAttackerModule, dict[str, float], Path]:
    """Fit and test an attacker; returns it, the last logged value of every metric of fit and test, and its best.ckpt."""
    L.seed_everything(0)
    model = attacker(unet_ckpt, **kwargs)
    checkpoint = BestCheckpoint(dirpath=root, filename="best")
    fit = trainer(root, epochs, callbacks=[checkpoint])
    data = ToySegmentationDataModule(n=32)
    fit.fit(model, datamodule=data)
    metrics = {k: float(v) for k, v in fit.callback_metrics.items()}
    fit.test(model, datamodule=data)
    metrics.update({k: float(v) for k, v in fit.callback_metrics.items()})
    return model, metrics, Path(checkpoint.best_model_path)
