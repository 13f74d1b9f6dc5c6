"""Keep the best checkpoint by the metric the model itself names, so that one callbacks config
serves classifiers (``val/acc``), segmenters (``val/dice``) and any later module."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``monitor=None`` means "the model's ``monitor`` attribute"
    (a ``(metric, "min" | "max")`` pair declared on each advmed module class).

    An explicit ``monitor`` (and ``mode``) in config wins, as in plain ``ModelCheckpoint``. A model
    that declares no metric keeps only the last checkpoint, as ``ModelCheckpoint(monitor=None)`` does.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._from_model = self.monitor is None

    def setup(self, trainer, pl_module, stage: str) -> None:
        declared = getattr(pl_module, "monitor", None)
        if self._from_model and declared is not None:
            metric, mode = declared
            if mode not in ("min", "max"):
                raise ValueError(f"{type(pl_module).__name__}.monitor mode must be 'min' or 'max', got {mode!r}")
            self.monitor, self.mode = metric, mode
            # What ModelCheckpoint's __init__ derives from the mode.
            self.kth_value = torch.tensor(float("inf") if mode == "min" else float("-inf"))
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        # A run that stops before its first validation (max_steps inside epoch 1, limit_val_batches=0
        # with a monitored metric) would end with no best.ckpt, and everything downstream (testing,
        # evaluate, the next pipeline stage) with it: keep the final weights under that name.
        if not self.best_model_path and trainer.global_step > 0 and not trainer.sanity_checking:
            path = self.format_checkpoint_name({})
            rank_zero_warn(f"{self.monitor} was never computed (no validation ran): {path} holds the final weights")
            self._save_checkpoint(trainer, path)
            self.best_model_path = path
