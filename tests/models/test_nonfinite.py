"""A training loss that is not finite: the run stops naming the step and keeps its last good
``last.ckpt`` (``nonfinite_loss=stop``, the default), or skips that batch (``nonfinite_loss=skip``)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from advmed.callbacks import LastCheckpoint
from advmed.models import ClassifierModule
from advmed.utils.checkpoint_io import AtomicCheckpointIO
from tests.models.classifier_toy import SIZE, data, trainer
from tests.models.gan_toy import LinearGAN


class PoisonBatch(L.Callback):
    """Put a NaN pixel into the training batch of global step ``step`` (as a corrupt tile would)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.weights: dict[int, list[torch.Tensor]] = {}  # global step -> the weights it starts from

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.weights[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()]
        if trainer.global_step == self.step:
            batch[0][0, 0, 0, 0] = float("nan")


def _fit(tmp_path, policy: str) -> tuple[ClassifierModule, L.Trainer]:
    L.seed_everything(0)
    model = ClassifierModule(arch="resnet18", num_classes=9, image_size=SIZE, scheduler=None,
                             optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
    model.set_nonfinite_loss(policy)
    # 72 tiles in batches of 36: two steps per epoch; step 3 is the second batch of epoch 1.
    poison = PoisonBatch(step=3)
    fit = trainer(tmp_path, 3, limit_val_batches=0, enable_checkpointing=True, plugins=[AtomicCheckpointIO()],
                  callbacks=[LastCheckpoint(str(tmp_path / "checkpoints")), poison])
    model.poison = poison
    fit.fit(model, datamodule=data())
    return model, fit


def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 3: lower model\.optimizer\.lr .*"
                       r"\(nonfinite_loss=skip skips such batches instead\)"):
        _fit(tmp_path, "stop")
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 2  # the end of epoch 0, before the bad batch
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_nonfinite_loss_skip_skips_only_the_bad_batch(tmp_path):
    model, fit = _fit(tmp_path, "skip")
    assert model.skipped_batches == 1 and fit.current_epoch == 3
    weights = model.poison.weights
    assert sorted(weights) == [0, 1, 2, 3, 4, 5]
    # The poisoned step changed no weight; the steps around it did.
    assert all(torch.equal(a, b) for a, b in zip(weights[3], weights[4]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[2], weights[3]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[4], weights[5]))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_gan_skips_the_step_of_the_network_whose_loss_is_not_finite():
    model = LinearGAN(nan_at=2)
    model.set_nonfinite_loss("skip")
    fit = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    fit.fit(model, torch.utils.data.DataLoader(torch.arange(1.0, 11).unsqueeze(1) / 10, batch_size=1))
    assert model.skipped_batches == 1
    assert fit.global_step == 10 + 10 - 1  # every critic step, all generator steps but the poisoned one
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="nonfinite_loss='ignore' must be one of stop, skip"):
        ClassifierModule(arch="resnet18", num_classes=3).set_nonfinite_loss("ignore")
