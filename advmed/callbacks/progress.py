"""Progress of Lightning's loops (fit, validation, test): Lightning's bar in a terminal, plain
periodic lines in a log (a SLURM job, a pipe), never carriage-return frames (DESIGN contract 10).

``conf/callbacks/default.yaml`` builds it with :func:`progress_bar` (``callbacks.progress``)::

    callbacks.progress.mode=lines callbacks.progress.every_s=60     # from the command line
    ADVMED_PROGRESS=lines python -m advmed.train ...                 # or for a whole job script

A log line, at most every ``every_s`` seconds and always at the end of a training epoch, of a
validation and of a test::

    train epoch 2/8 step 40/282 | loss=0.5312 acc=0.8125 | 210.3 images/s
    val epoch 2/8 step 20/20 | loss=0.6021 acc=0.7833 | 512.9 images/s
    test step 5/5 | acc=0.8 adv_acc=0.3 attack_success_rate=0.625 | 98.2 images/s

The metrics are the progress-bar ones (``self.log(..., prog_bar=True)``) of the line's split;
a validation or test line at its end shows every scalar metric of its split when the module
marked none for the bar. The global step (``/ max_steps`` when set) follows the epoch's step on
training lines of a run stopped by ``max_steps``. Images are counted as the first dimension of the
batch's first tensor. Sanity-check batches are not reported. Lines go to the ``advmed.progress``
logger (:func:`advmed.utils.progress.emit`): Hydra writes them to the console and the run's log.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from torch import Tensor

from advmed.utils.progress import (
    DEFAULT_EVERY_S,
    Clock,
    Throttle,
    check_every_s,
    emit,
    format_metrics,
    format_rate,
    resolve_mode,
    scalar,
)


def progress_bar(mode: str = "auto", every_s: float = DEFAULT_EVERY_S, enabled: bool = True,
                 refresh_rate: int = 1) -> L.Callback:
    """The progress callback of a trainer: Lightning's :class:`TQDMProgressBar` (``bar``; what
    ``auto`` picks when stdout, where that bar draws, is a terminal), a :class:`LineProgressBar`
    (``lines``: a log), a silent one (``off``), or, when ``enabled`` is false
    (``trainer.enable_progress_bar=false``), a callback that does nothing: Lightning refuses any
    progress bar then, and without one of ours it would add its own bar.

    Args:
        mode: ``auto | bar | lines | off`` (:func:`advmed.utils.progress.resolve_mode`: ``auto``
            follows ``ADVMED_PROGRESS`` when set, else the terminal test).
        every_s: seconds between lines (>= 0) in ``lines`` mode.
        enabled: ``${trainer.enable_progress_bar}``.
        refresh_rate: batches between redraws of the bar.
    """
    every_s = check_every_s(every_s, "callbacks.progress.every_s")
    mode = resolve_mode(mode, sys.stdout, source="callbacks.progress.mode")
    if not enabled:
        return NoProgress()
    if mode == "bar":
        return TQDMProgressBar(refresh_rate=refresh_rate)
    bar = LineProgressBar(every_s=every_s)
    if mode == "off":
        bar.disable()
    return bar


class NoProgress(L.Callback):
    """Stands in for the progress callback under ``trainer.enable_progress_bar=false``: does nothing."""


def batch_size_of(batch: Any) -> int | None:
    """Images in ``batch``: the first dimension of its first tensor (in tuples, lists, dicts), None without one."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        for item in batch:
            size = batch_size_of(item)
            if size is not None:
                return size
    return None


class _Stage:
    """Counters of one running stage (a training epoch, a validation, a test)."""

    def __init__(self, name: str, total: float, clock: Clock) -> None:
        self.name, self.total, self.clock = name, total, clock
        self.start = self.end = clock()
        self.batches = self.images = 0
        self.step = 0  # the place in the stage: batches seen, or the batch index of a resumed epoch

    def add(self, batch: Any, step: int | None = None) -> None:
        self.batches += 1
        self.step = self.batches if step is None else step
        self.images += batch_size_of(batch) or 0
        self.end = self.clock()  # the rate stops at the last batch (a training epoch's validation runs after it)


class LineProgressBar(ProgressBar):
    """Plain progress lines for logs (see the module docstring); one line at most every ``every_s``
    seconds of ``clock``, and one at the end of every training epoch, validation and test.

    Args:
        every_s: seconds between lines (>= 0).
        clock: monotonic seconds (injected by tests).
        logger: where lines go; None: ``advmed.progress``.
    """

    def __init__(self, every_s: float = DEFAULT_EVERY_S, clock: Clock = time.monotonic,
                 logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.every_s = check_every_s(every_s, "callbacks.progress.every_s")
        self.clock, self.logger = clock, logger
        self.throttle = Throttle(self.every_s, clock)
        self._enabled = True
        self._stage: _Stage | None = None
        self._paused: _Stage | None = None  # the training epoch while its validation runs

    # ------------------------------------------------------------------ ProgressBar's interface

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    # ------------------------------------------------------------------ lines

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule, stage_end: bool = False) -> str:
        """The line of the running stage: where it is, its metrics, its images/s."""
        stage = self._stage
        where = [stage.name]
        if stage.name != "test":
            where.append(f"epoch {trainer.current_epoch + 1}" + (f"/{trainer.max_epochs}" if _finite(trainer.max_epochs) else ""))
        where.append(f"step {stage.step}" + (f"/{int(stage.total)}" if _finite(stage.total) else ""))
        if stage.name == "train" and trainer.max_steps is not None and trainer.max_steps > 0:
            where.append(f"(global step {trainer.global_step}/{trainer.max_steps})")
        parts = [" ".join(where)]
        metrics = format_metrics(self.stage_metrics(trainer, pl_module, stage.name, stage_end), f"{stage.name}/")
        if metrics:
            parts.append(metrics)
        parts.append(format_rate(stage.images, stage.end - stage.start, "images"))
        return " | ".join(parts)

    def stage_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str, stage_end: bool) -> dict:
        """The progress-bar metrics of split ``name`` (and unprefixed ones, but not ``v_num``); at the
        end of a validation or test without any, every scalar metric of the split."""
        prefix = f"{name}/"
        shown = {k: v for k, v in self.get_metrics(trainer, pl_module).items()
                 if k != "v_num" and (k.startswith(prefix) or "/" not in k)}
        if stage_end and name != "train" and not any(k.startswith(prefix) for k in shown):
            shown.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and scalar(v) is not None})
        return shown

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, force: bool = False) -> None:
        if self._enabled and self._stage is not None and self.throttle.due(force):
            emit(self.line(trainer, pl_module, stage_end=force), self.logger)

    def _start(self, name: str, total: float) -> None:
        self._stage = _Stage(name, total, self.clock)

    def _batch(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, step: int | None = None) -> None:
        stage = self._stage
        if stage is not None:
            stage.add(batch, step)
            if stage.step < stage.total:  # the stage's end line reports its last batch
                self._report(trainer, pl_module)

    def _end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, force=True)
        self._stage = None

    # ------------------------------------------------------------------ hooks

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("train", self.total_train_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._batch(trainer, pl_module, batch, step=batch_idx + 1)  # a fit resumed mid-epoch starts past 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the epoch's validation, when the epoch-level train metrics are computed.
        self._end(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._paused = self._stage
            self._start("val", _total(trainer.num_val_batches))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._batch(trainer, pl_module, batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._end(trainer, pl_module)
            self._stage, self._paused = self._paused, None
            if self._stage is not None:  # the training epoch goes on: its rate leaves the validation out
                now = self.clock()
                self._stage.start += now - self._stage.end
                self._stage.end = now

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("test", _total(trainer.num_test_batches))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch(trainer, pl_module, batch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(trainer, pl_module)


def _total(batches: float | Sequence[float]) -> float:
    return sum(batches) if isinstance(batches, Sequence) else batches


def _finite(value: float | None) -> bool:
    return value is not None and value >= 0 and not math.isinf(value)
