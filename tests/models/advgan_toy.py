"""Tiny AdvGAN modules against the toy classifier of :mod:`tests.models.classifier_toy`, shared by the
module, attack and entry-point tests (a fit takes seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from advmed.callbacks import BestCheckpoint
from advmed.data.histology.synthetic_histology import CLASS_NAMES
from advmed.models.advgan import AdvGANModule
from tests.models.classifier_toy import SIZE, data, trainer

# Xiao et al.'s widths with one residual block and a two-layer discriminator at 16 px.
TINY = dict(num_classes=9, in_channels=3, class_names=list(CLASS_NAMES), image_size=SIZE, base_width=8, depth=2,
            residual_blocks=1, critic_width=8, critic_depth=2,
            generator_optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.5, 0.999]},
            critic_optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.5, 0.999]})


def advgan(classifier_ckpt: Path | str | None, **kwargs) -> AdvGANModule:
    return AdvGANModule(None if classifier_ckpt is None else str(classifier_ckpt), **{**TINY, **kwargs})


def train_advgan(root: Path, classifier_ckpt: Path, epochs: int = 6, **kwargs) -> tuple[AdvGANModule, dict[str, float], Path]:
    """Fit and test an AdvGAN; returns it, the last logged value of every metric of fit and test, and its best.ckpt."""
    L.seed_everything(0)
    model = advgan(classifier_ckpt, **kwargs)
    checkpoint = BestCheckpoint(dirpath=root, filename="best")
    fit = trainer(root, epochs, callbacks=[checkpoint], enable_checkpointing=True)
    fit.fit(model, datamodule=data())
    metrics = {k: float(v) for k, v in fit.callback_metrics.items()}
    fit.test(model, datamodule=data())
    metrics.update({k: float(v) for k, v in fit.callback_metrics.items()})
    return model, metrics, Path(checkpoint.best_model_path)
