"""SegmentationModule: training, attacked testing, online augmentation, checkpoints, metric history."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from advmed.attacks import FGSM
from advmed.callbacks import AdversarialExamplesCallback, BestCheckpoint
from advmed.models.checkpoint import load_module
from advmed.models.segmentation import SegmentationModule
from tests.models.segmentation_toy import CLASS_NAMES, ToySegmentationDataModule

ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-2}


def _module(**kwargs) -> SegmentationModule:
    args = dict(num_classes=3, in_channels=1, class_names=CLASS_NAMES, image_size=32, base_width=8, depth=2, optimizer=ADAM)
    return SegmentationModule(**{**args, **kwargs})


def _trainer(tmp_path, epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, deterministic=True, inference_mode=False, **kwargs,
    )


def test_module_learns_the_toy_task_and_attacks_lower_its_dice(tmp_path):
    L.seed_everything(0)
    data = ToySegmentationDataModule()
    model = _module(test_attack=FGSM(eps=0.2))
    model.check_datamodule(data)
    grid = AdversarialExamplesCallback(str(tmp_path), num_images=2)
    trainer = _trainer(tmp_path, epochs=6, callbacks=[grid])
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["test/dice"] > 0.8, m
    assert m["test/adv_dice"] < m["test/dice"] - 0.1
    assert m["test/dice_drop"] == pytest.approx(m["test/dice"] - m["test/adv_dice"], abs=1e-6)
    assert {"test/dice_disc", "test/iou_square", "test/adv_iou", "test/dice_drop_disc", "test/linf"} <= set(m)
    assert m["test/linf"] == pytest.approx(0.2, abs=1e-4)
    assert (tmp_path / "adversarial_examples.png").stat().st_size > 1000


def test_online_augmentation_needs_an_attack_and_keeps_batch_norm_statistics():
    with pytest.raises(ValueError, match="attack@train_attack"):
        _module(adv_fraction=0.5)
    model = _module(adv_fraction=0.5, train_attack=FGSM(eps=0.1)).train()
    stats = [b.running_mean.clone() for b in model.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    x, y = torch.rand(4, 1, 32, 32), torch.randint(0, 3, (4, 32, 32))
    mixed = model.mix_adversarial(x, y)
    after = [b.running_mean for b in model.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after))  # attack ran in eval mode
    assert not torch.equal(mixed[:2], x[:2]) and torch.equal(mixed[2:], x[2:])
    assert (mixed[:2] - x[:2]).abs().max() <= 0.1 + 1e-6
    assert all(p.grad is None for p in model.parameters())


def test_best_checkpoint_follows_the_models_metric_and_reloads(tmp_path):
    L.seed_everything(0)
    data = ToySegmentationDataModule(n=16)
    checkpoint = BestCheckpoint(dirpath=tmp_path / "ckpt", filename="best")
    trainer = _trainer(tmp_path, epochs=2, callbacks=[checkpoint])
    model = _module()
    trainer.fit(model, datamodule=data)
    assert (checkpoint.monitor, checkpoint.mode) == ("val/dice", "max")
    assert checkpoint.best_model_score is not None
    restored = load_module(checkpoint.best_model_path, datamodule=data)
    assert isinstance(restored, SegmentationModule)
    x = torch.rand(2, 1, 32, 32)
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, best[k]) for k, v in restored.state_dict().items())
    other = ToySegmentationDataModule()
    other.num_classes, other.class_names = 4, [*CLASS_NAMES, "extra"]
    with pytest.raises(ValueError, match="num_classes=3 but the data config has num_classes=4"):
        load_module(checkpoint.best_model_path, datamodule=other)
    assert restored(x).shape == (2, 3, 32, 32)


def test_a_diverging_loss_names_the_learning_rate():
    model = _module()
    with pytest.raises(FloatingPointError, match="lower model.optimizer.lr"):
        model._loss(torch.full((1, 3, 4, 4), float("nan")), torch.zeros(1, 4, 4, dtype=torch.long))


def test_metric_history_writes_every_epoch_and_continues_after_a_resume(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from advmed.callbacks import MetricHistoryCallback

    def fit(epochs: int, ckpt_path=None):
        history = MetricHistoryCallback(str(tmp_path))
        last = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
        _trainer(tmp_path, epochs=epochs, callbacks=[history, last]).fit(
            _module(), datamodule=ToySegmentationDataModule(n=16), ckpt_path=ckpt_path)

    def rows():
        import csv

        with (tmp_path / "history.csv").open() as f:
            return list(csv.DictReader(f))

    L.seed_everything(0)
    fit(2)
    first = rows()
    assert [r["epoch"] for r in first] == ["0", "1"]
    assert {"train/loss", "val/iou", "val/dice_disc"} <= set(first[0]) and all(r["val/iou"] for r in first)
    fit(3, ckpt_path=tmp_path / "ckpt" / "last.ckpt")  # a new callback instance: the rows come from the checkpoint
    resumed = rows()
    assert [r["epoch"] for r in resumed] == ["0", "1", "2"] and resumed[:2] == first
