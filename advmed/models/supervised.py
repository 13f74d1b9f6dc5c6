"""What the supervised modules (classifier, segmenter) share: the optimiser and scheduler built
from config, the training objective (standard, mixed batch, PGD-AT, TRADES, ...) with its training
attack, and a loss that stops the run with a clear message when it stops being finite."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from hydra.utils import instantiate

from advmed.models.base import AdvmedModule
from advmed.objectives import Mixed, Objective, ObjectiveOutput, Standard
from advmed.objectives.mixed import mix_adversarial


class SupervisedModule(AdvmedModule):
    """Base of modules trained on ``(x, y)`` batches with one optimiser.

    Subclasses set ``task`` (``classification`` | ``segmentation``), implement :meth:`criterion`,
    call ``save_hyperparameters`` with ``optimizer``, ``scheduler`` and ``adv_fraction`` among their
    arguments (the attacks and the objective ignored: config, not state) and then :meth:`init_attacks`;
    their training step calls :meth:`objective_step`.

    - ``optimizer``: a Hydra ``_target_`` dict of a ``torch.optim`` optimiser (params added);
      None: AdamW lr 1e-3. Keys set to null are left out (the optimiser's default), so that a
      config switching e.g. SGD to Adam can drop ``momentum`` with ``momentum: null``.
    - ``scheduler``: an optional ``_target_`` dict of a ``torch.optim.lr_scheduler`` scheduler,
      with an optional ``interval`` (``epoch`` | ``step``).
    - ``objective``: the loss of a training step (:mod:`advmed.objectives`, ``objective=<name>``);
      None: :class:`~advmed.objectives.Standard`. Not saved in the checkpoint, like the attacks:
      a module rebuilt from its checkpoint trains with the standard objective.
    - ``adv_fraction``: the fraction of each training batch replaced by ``train_attack``'s images
      made with the current weights (adversarial training; with Inverse FGSM, the online form of
      Pervin et al.'s augmentation); 0 disables it. The spelling of
      :class:`~advmed.objectives.Mixed` that every config before the objective group used: with the
      standard objective, ``adv_fraction > 0`` trains as ``Mixed(fraction=adv_fraction)``, bit for
      bit what it trained before (same attack calls, same loss, same random stream). With another
      objective it must stay 0 (``objective=mixed objective.fraction=...`` says the same thing).
    """

    task: ClassVar[str]
    """``classification`` | ``segmentation``: what the objective checks it can train at build time."""
    objective: Objective

    @classmethod
    def restore_kwargs(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        # The training attack and objective are config, not state, and are not in the checkpoint: a
        # module rebuilt from it (to evaluate, attack or augment with) trains no more, so it mixes in nothing.
        return {**super().restore_kwargs(hparams), "adv_fraction": 0.0}

    def init_attacks(self, train_attack, test_attack, objective: Objective | None = None) -> None:
        """Check the training settings against each other and against the task; keep the attack the
        objective trains against (the configured one, or the default it builds) as ``train_attack``."""
        adv_fraction = self.hparams.adv_fraction
        if not 0.0 <= adv_fraction <= 1.0:
            raise ValueError(f"model.adv_fraction={adv_fraction} must be in [0, 1]")
        objective = Standard() if objective is None else objective
        if adv_fraction > 0 and type(objective) is not Standard:
            raise ValueError(
                f"model.adv_fraction={adv_fraction} is the standard objective's spelling of objective=mixed, but "
                f"objective={objective.name}: set model.adv_fraction=0 (with objective=mixed, set objective.fraction "
                "instead)"
            )
        if adv_fraction > 0 and train_attack is None:
            raise ValueError(
                f"model.adv_fraction={adv_fraction} needs a training attack: set attack@train_attack=fgsm (or pgd, ...)"
            )
        if adv_fraction > 0:
            objective = Mixed(fraction=adv_fraction, ignore_index=objective.ignore_index)
        objective.check_task(self.task)
        self.train_attack = objective.training_attack(train_attack)
        self.test_attack = test_attack
        self.objective = objective

    def criterion(self, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The model's own loss, a scalar: averaged over the samples, or over the pixels ``weight``
        (a 0/1 mask shaped like ``y``) keeps. What the objectives call the natural loss."""
        raise NotImplementedError

    def mix_adversarial(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` with its first ``round(adv_fraction * N)`` samples replaced by ``train_attack``'s
        (:func:`advmed.objectives.mixed.mix_adversarial` with ``model.adv_fraction``).

        The batch is shuffled, so its first samples are a random subset. The attack runs the
        model in eval mode (batch-norm statistics untouched) and leaves no parameter gradients.
        """
        return mix_adversarial(self, self.train_attack, x, y, self.hparams.adv_fraction)

    def objective_step(self, x: torch.Tensor, y: torch.Tensor) -> ObjectiveOutput | None:
        """The objective's output on the training batch, its loss checked (:meth:`check_finite`) and
        logged as ``train/loss`` with its terms as ``train/<term>``; None when the loss is not finite
        under ``nonfinite_loss=skip`` (the step then returns None)."""
        out = self.objective(self, x, y, self.criterion, self.train_attack)
        if self.check_finite(out.loss) is None:
            return None
        self.log("train/loss", out.loss, prog_bar=True)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value)
        return out

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
