"""Progress of Lightning's loops: the factory's choice, the line format and its throttling (a toy
module advances an injected clock, no sleeps), and a piped `python -m advmed.train` whose log
holds plain lines, not carriage-return frames."""

from __future__ import annotations

import io
import logging
import re
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advmed.callbacks.progress import LineProgressBar, NoProgress, batch_size_of, progress_bar
from advmed.utils.progress import ENV_VAR
from tests.entrypoints.conftest import TINY, run_module


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockedModule(L.LightningModule):
    """A linear classifier whose every training batch takes 4 s of ``clock`` and every other batch 1 s."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.net = nn.Linear(2, 2)

    def _step(self, batch, seconds: float):
        self.clock.now += seconds
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, 4)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._step(batch, 1), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self._step(batch, 1))  # not on the bar: the test's end line shows it anyway

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(n)
    return DataLoader(TensorDataset(torch.randn(n, 2, generator=g), torch.arange(n) % 2), batch_size=4)


def fit_and_test(callback, **trainer_args) -> None:
    clock = getattr(callback, "clock", None)
    clock = clock if isinstance(clock, FakeClock) else FakeClock()
    module = ClockedModule(clock)
    args = {"max_epochs": 2, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
            "enable_model_summary": False, "num_sanity_val_steps": 1, "callbacks": [callback], **trainer_args}
    trainer = L.Trainer(**args)
    trainer.fit(module, loader(32), loader(8))  # 8 training batches, 2 validation batches
    trainer.test(module, loader(8), verbose=False)


@pytest.fixture
def progress_log(caplog):
    caplog.set_level(logging.INFO, logger="advmed.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "advmed.progress"]


# --------------------------------------------------------------------------- the factory


def test_factory_gives_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # Lightning's bar draws on stdout: a pipe here
    assert type(progress_bar()) is LineProgressBar
    monkeypatch.setenv(ENV_VAR, "bar")
    assert type(progress_bar()) is TQDMProgressBar
    assert type(progress_bar(mode="lines")) is LineProgressBar
    off = progress_bar(mode="off")
    assert isinstance(off, LineProgressBar) and off.is_disabled  # silent, yet Lightning adds no bar of its own
    assert progress_bar(every_s=5, mode="lines").every_s == 5


def test_factory_refuses_bad_settings():
    with pytest.raises(ValueError, match=r"callbacks\.progress\.mode='loud'"):
        progress_bar(mode="loud")
    with pytest.raises(ValueError, match=r"callbacks\.progress\.every_s=-3 must be a number of seconds >= 0"):
        progress_bar(every_s=-3)


def test_enable_progress_bar_false_still_silences_training():
    callback = progress_bar(mode="lines", enabled=False)
    assert isinstance(callback, NoProgress) and not isinstance(callback, ProgressBar)
    trainer = L.Trainer(enable_progress_bar=False, callbacks=[callback], logger=False, enable_checkpointing=False)
    assert trainer.progress_bar_callback is None  # Lightning accepted it and added no bar
    trainer = L.Trainer(callbacks=[progress_bar(mode="lines")], logger=False, enable_checkpointing=False)
    assert type(trainer.progress_bar_callback) is LineProgressBar  # the one bar: Lightning's was not added


def test_batch_size_is_the_first_tensors_length():
    x = torch.zeros(5, 3)
    assert batch_size_of((x, torch.zeros(5))) == 5
    assert batch_size_of({"meta": "a", "image": x}) == 5
    assert batch_size_of(["no tensor"]) is None


# --------------------------------------------------------------------------- lines


def test_lines_are_throttled_and_name_stage_epoch_step_metrics_and_rate(progress_log):
    fit_and_test(LineProgressBar(every_s=10, clock=FakeClock()))
    lines = progress_log()
    assert all("\r" not in line and "\n" not in line for line in lines)
    where = [line.split(" | ")[0] for line in lines]
    # 4 s per training batch: a line after 12 s and 24 s (batches 3 and 6), none in the sanity
    # check, a line at the end of each validation and each training epoch, and one for the test.
    assert where == [
        "train epoch 1/2 step 3/8", "train epoch 1/2 step 6/8", "val epoch 1/2 step 2/2", "train epoch 1/2 step 8/8",
        "train epoch 2/2 step 3/8", "train epoch 2/2 step 6/8", "val epoch 2/2 step 2/2", "train epoch 2/2 step 8/8",
        "test step 2/2",
    ]
    # 4 images per batch, 4 s (training) or 1 s (validation, test) per batch, validation time left out of training's
    assert all(line.endswith(" | 1.0 images/s") for line in lines if line.startswith("train"))
    assert all(line.endswith(" | 4.0 images/s") for line in lines if line.startswith(("val", "test")))
    assert re.fullmatch(r"train epoch 1/2 step 8/8 \| loss=[\d.]+ \| 1\.0 images/s", lines[3])
    assert re.fullmatch(r"val epoch 1/2 step 2/2 \| loss=[\d.]+ \| 4\.0 images/s", lines[2])  # no train/ metric
    assert re.fullmatch(r"test step 2/2 \| loss=[\d.]+ \| 4\.0 images/s", lines[-1])


def test_lines_show_the_global_step_of_a_run_stopped_by_max_steps(progress_log):
    fit_and_test(LineProgressBar(every_s=1000, clock=FakeClock()), max_epochs=-1, max_steps=10)
    train = [line.split(" | ")[0] for line in progress_log() if line.startswith("train")]
    assert train == ["train epoch 1 step 8/8 (global step 8/10)", "train epoch 2 step 2/2 (global step 10/10)"]


def test_off_writes_nothing(progress_log):
    fit_and_test(progress_bar(mode="off"))
    assert progress_log() == []


# --------------------------------------------------------------------------- a real run, piped


def test_piped_training_log_has_plain_lines_per_epoch_and_no_bar_frames(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    args = ["experiment=demo", *TINY, "+trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "callbacks.progress.every_s=1000", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_module("advmed.train", args, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert "\r" not in output
    # Library lines that say nothing to our users are silenced in the entry points (advmed.utils.library_noise).
    assert "litlogger" not in output and "LeafSpec" not in output, output
    for epoch in (1, 2):
        assert re.search(rf"train epoch {epoch}/2 step 2/2 \| loss=[\d.]+ acc=[\d.]+ \| [\d.]+ images/s", output), output
        assert re.search(rf"val epoch {epoch}/2 step 1/1 \| .*acc=[\d.]+ \| [\d.]+ images/s", output), output
    assert re.search(r"test step 1/1 \| .*adv_acc=[\d.]+.* \| [\d.]+ images/s", output), output
    run_log = (tmp_path / "run" / "train.log").read_text()  # Hydra's log of the run holds them too
    assert run_log.count("[advmed.progress]") == 5  # every_s=1000: only the ends of 2 x (train, val) and test
