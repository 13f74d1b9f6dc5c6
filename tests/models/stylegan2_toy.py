"""A tiny StyleGAN2Module on 16 px synthetic histology and a judge classifier checkpoint, shared by
the module, callback and entry-point tests (each fit takes a second or two on a CPU)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from advmed.data.histology.synthetic_histology import CLASS_NAMES, SyntheticHistologyDataModule
from advmed.models.classifier import ClassifierModule
from advmed.models.stylegan2 import StyleGAN2Module

SIZE = 16
# 16 channels at 4 px, 8 at 8, 4 at 16; regularisers every 2 steps so that a few batches show both.
TINY = dict(num_classes=9, in_channels=3, class_names=list(CLASS_NAMES), image_size=SIZE, z_dim=8, w_dim=8,
            mapping_layers=2, channel_base=64, channel_max=16, critic_reg_interval=2, generator_reg_interval=2)
BATCHES_PER_EPOCH = 3  # 18 training tiles in batches of 6


def data(**kwargs) -> SyntheticHistologyDataModule:
    """Two training tiles per class (18), one per class in val and test, batches of 6, no augmentation."""
    args = dict(image_size=SIZE, train_per_class=2, val_per_class=1, test_per_class=1, batch_size=6,
                augment={"enabled": False})
    return SyntheticHistologyDataModule(**{**args, **kwargs})


def trainer(root: Path, epochs: int = 1, **kwargs) -> L.Trainer:
    args = dict(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, default_root_dir=root, deterministic=True,
                inference_mode=False, limit_val_batches=0)
    return L.Trainer(**{**args, **kwargs})


def save_judge(root: Path, image_size: int = SIZE) -> Path:
    """A ResNet18 ClassifierModule checkpoint after one training step (the FID features and judge of the tests)."""
    L.seed_everything(0)
    model = ClassifierModule(arch="resnet18", num_classes=9, in_channels=3, class_names=list(CLASS_NAMES),
                             image_size=image_size)
    fit = trainer(root, 1, limit_train_batches=1)
    fit.fit(model, datamodule=data(image_size=image_size))
    path = root / f"judge_{image_size}.ckpt"
    fit.save_checkpoint(path)
    return path


def module(judge_ckpt: Path | None, fid: dict | None = None, **kwargs) -> StyleGAN2Module:
    """The tiny module with FID features from ``judge_ckpt`` (18 reference images, batches of 8)."""
    fid = {"features": "classifier", "classifier_ckpt": str(judge_ckpt), "num_images": 18, "batch_size": 8,
           **(fid or {})} if judge_ckpt is not None else fid
    return StyleGAN2Module(**{**TINY, "fid": fid, **kwargs})
