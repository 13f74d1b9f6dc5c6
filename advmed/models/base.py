"""What every advmed LightningModule shares: a checkpoint that names its class, a way to be
rebuilt from that checkpoint alone, and a check that it fits the data it is given.

A new model plugs into ``advmed.train`` / ``advmed.evaluate`` by subclassing
:class:`AdvmedModule` (DESIGN contract 8): the entry points only call Lightning's hooks and
:func:`advmed.models.checkpoint.load_module`, never model-specific code.
"""

from __future__ import annotations

from typing import Any

import lightning as L

# Checkpoint key holding the import path of the module class that wrote it.
CLASS_KEY = "advmed_module"
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
