"""What the supervised modules (classifier, segmenter) share: the optimiser and scheduler built
from config, adversarial training / online augmentation with ``train_attack``, and a loss that
stops the run with a clear message when it stops being finite."""

from __future__ import annotations

import math
from typing import Any

import torch
from hydra.utils import instantiate

from advmed.models.base import AdvmedModule


class SupervisedModule(AdvmedModule):
    """Base of modules trained on ``(x, y)`` batches with one optimiser.

    Subclasses call ``save_hyperparameters`` with ``optimizer``, ``scheduler`` and
    ``adv_fraction`` among their arguments and then :meth:`init_attacks`.

    - ``optimizer``: a Hydra ``_target_`` dict of a ``torch.optim`` optimiser (params added);
      None: AdamW lr 1e-3. Keys set to null are left out (the optimiser's default), so that a
      config switching e.g. SGD to Adam can drop ``momentum`` with ``momentum: null``.
    - ``scheduler``: an optional ``_target_`` dict of a ``torch.optim.lr_scheduler`` scheduler,
      with an optional ``interval`` (``epoch`` | ``step``).
    - ``adv_fraction``: the fraction of each training batch replaced by ``train_attack``'s images
      made with the current weights (adversarial training; with Inverse FGSM, the online form of
      Pervin et al.'s augmentation); 0 disables it.
    """

    @classmethod
    def restore_kwargs(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        # The training attack is config, not state, and is not in the checkpoint: a module rebuilt
        # from it (to evaluate, attack or augment with) trains no more, so it mixes in nothing.
        return {**super().restore_kwargs(hparams), "adv_fraction": 0.0}

    def init_attacks(self, train_attack, test_attack) -> None:
        adv_fraction = self.hparams.adv_fraction
        if not 0.0 <= adv_fraction <= 1.0:
            raise ValueError(f"model.adv_fraction={adv_fraction} must be in [0, 1]")
        if adv_fraction > 0 and train_attack is None:
            raise ValueError(
                f"model.adv_fraction={adv_fraction} needs a training attack: set attack@train_attack=fgsm (or pgd, ...)"
            )
        self.train_attack = train_attack
        self.test_attack = test_attack

    def mix_adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` with its first ``round(adv_fraction * N)`` samples replaced by ``train_attack``'s.

        The batch is shuffled, so its first samples are a random subset. The attack runs the
        model in eval mode (batch-norm statistics untouched) and leaves no parameter gradients.
        """
        n_adv = math.floor(self.hparams.adv_fraction * len(x) + 0.5)
        if n_adv == 0:
            return x
        return torch.cat([self.train_attack(self, x[:n_adv], y[:n_adv]), x[n_adv:]])

    def check_finite(self, loss: torch.Tensor) -> torch.Tensor | None:
        """``loss`` when finite (on every DDP rank). Otherwise, in training, None under
        ``nonfinite_loss=skip`` (the step returns None: Lightning skips that batch's backward and
        optimiser step) or a FloatingPointError that says where it diverged and what to change;
        in validation and testing always the error."""
        if self.finite_on_every_rank(loss):
            return loss
        optimizer = self.hparams.get("optimizer") or {}
        message = (
            f"loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: lower "
            f"model.optimizer.lr (now {optimizer.get('lr', '?')}) or check the inputs are finite and in [0, 1]"
        )
        if not self.training:
            raise FloatingPointError(message)
        self.nonfinite_training_loss(message)
        return None

    def configure_optimizers(self):
        cfg = self.hparams.get("optimizer") or {"_target_": "torch.optim.AdamW", "lr": 1e-3}
        optimizer = instantiate({k: v for k, v in cfg.items() if v is not None}, params=self.parameters())
        if not self.hparams.get("scheduler"):
            return optimizer
        scheduler_cfg = {k: v for k, v in self.hparams.scheduler.items() if v is not None}
        interval = scheduler_cfg.pop("interval", "epoch")
        scheduler = instantiate(scheduler_cfg, optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
