"""What every advmed LightningModule shares: a checkpoint that names its class, a way to be
rebuilt from that checkpoint alone, and a check that it fits the data it is given.

A new model plugs into ``advmed.train`` / ``advmed.evaluate`` by subclassing
:class:`AdvmedModule` (DESIGN contract 8): the entry points only call Lightning's hooks and
:func:`advmed.models.checkpoint.load_module`, never model-specific code.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import lightning as L
import torch

# The checkpoint key naming the module class that wrote it: defined where checkpoint files are read.
from advmed.utils.checkpoint_file import CLASS_KEY

log = logging.getLogger(__name__)
M = TypeVar("M", bound="AdvmedModule")

# What a training step does with a loss that is not finite (``nonfinite_loss`` in conf/train.yaml).
NONFINITE_POLICIES = ("stop", "skip")
# Values the data and the model must agree on when both state them (DESIGN contract 4).
DATA_FIELDS = ("num_classes", "in_channels", "class_names")


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class AdvmedModule(L.LightningModule):
    """Base of advmed's LightningModules.

    Subclasses save their constructor arguments with ``save_hyperparameters`` (plain values,
    so checkpoints load with ``weights_only=True``), and may override:

    - :meth:`restore_kwargs` to adjust those arguments when rebuilding from a checkpoint
      (e.g. drop a path to pretrained weights the trained state replaces);
    - :meth:`check_datamodule` to check more than ``num_classes`` / ``in_channels`` / ``class_names``.

    ``monitor`` names the validation metric that picks the best checkpoint.
    ``train_attack`` / ``test_attack`` are the attacks the entry points hand over (None: no
    attack); a module that has no use for them simply ignores them.
    """

    train_attack = None
    test_attack = None
    monitor: tuple[str, str] | None = None
    """``(metric, "min" | "max")`` that picks the best checkpoint (see ``BestCheckpoint``)."""
    nonfinite_loss: str = "stop"
    """``stop``: a training loss that is not finite ends the run with a FloatingPointError naming the
    step (the last checkpoint written stays the last good state); ``skip``: that batch is skipped
    with a warning and counted in ``skipped_batches``. Set by ``advmed.train`` from config."""
    skipped_batches: int = 0

    def set_nonfinite_loss(self, policy: str) -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss={policy!r} must be one of {', '.join(NONFINITE_POLICIES)}")
        self.nonfinite_loss = policy

    def finite_on_every_rank(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite here and on every other DDP rank: ranks must agree to stop
        or skip together, else the others wait for a gradient all-reduce that never comes."""
        finite = bool(torch.isfinite(value).all())
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        return finite

    def nonfinite_training_loss(self, message: str) -> None:
        """Act on a training loss that is not finite (on some rank): raise a FloatingPointError with
        ``message``, or (``nonfinite_loss=skip``) warn and count the skipped batch."""
        if self.nonfinite_loss == "skip":
            self.skipped_batches += 1
            log.warning("%s: batch skipped (nonfinite_loss=skip; %d skipped so far)", message, self.skipped_batches)
            return
        raise FloatingPointError(f"{message} (nonfinite_loss=skip skips such batches instead)")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = class_path(type(self))

    @classmethod
    def restore_kwargs(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments that rebuild the module from its checkpoint's hyper-parameters."""
        return dict(hparams)

    def check_datamodule(self, datamodule: L.LightningDataModule) -> None:
        """Raise ValueError when the data does not fit the model (values both state differ)."""
        for name in DATA_FIELDS:
            ours, theirs = self.hparams.get(name), getattr(datamodule, name, None)
            if ours is None or theirs is None:
                continue
            if (list(ours) if name == "class_names" else ours) != (list(theirs) if name == "class_names" else theirs):
                raise ValueError(
                    f"the model was trained with {name}={ours} but the data config has {name}={theirs}: "
                    "use the data it was trained on (data=...)"
                )


def build_untrained_target(cls: type[M], settings: dict[str, Any], missing: str) -> M:
    """A freshly initialised ``cls(**settings)`` in eval mode, standing in for the checkpoint that the
    config key ``missing`` leaves unset (a model to attack, or a judge), with one log line saying so.

    Only ``debug=tiny`` asks for one (``model.untrained_target``, StyleGAN2's ``model.untrained_judge``):
    a smoke run checks the pipeline, not the figure. The weights come from a fixed seed in a forked RNG, so that the run's random stream is
    left alone and a module rebuilt from its checkpoint (which leaves frozen targets out) meets the
    same target again.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        target = cls(**settings)
    shown = ", ".join(f"{key}={value}" for key, value in settings.items() if key != "class_names")
    log.warning("%s is not set: using a freshly initialised %s(%s) instead (debug=tiny: a smoke run, its numbers "
                "mean nothing)", missing, cls.__name__, shown)
    return target.eval()
