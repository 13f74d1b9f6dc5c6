"""The catastrophic-overfitting guard of single-step adversarial training (``objective=fgsm_rs``).

FGSM training can overfit catastrophically (Wong et al., ICLR 2020, Sec. 5.2 and their code's
``--early-stop``): within an epoch or two the model becomes robust to its single-step attack while
PGD accuracy collapses to near 0. The guard watches PGD accuracy on a held batch and, when it falls
by more than ``margin`` below the best seen, logs it, restores the weights of the best check and
stops the run (or continues); :attr:`CatastrophicOverfittingGuard.metrics` carry the verdict to
``metrics.json`` and ``report.md``.

Written here because no well-kept library has it: Lightning's ``EarlyStopping`` compares a logged
metric and keeps no weights to roll back to.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, default_collate

from advmed.attacks.core.model_mode import eval_mode
from advmed.attacks.core.validation import as_float
from advmed.attacks.pgd import PGD
from advmed.objectives.divergences import valid_pixels
from advmed.objectives.validation import check_steps, check_unit

log = logging.getLogger(__name__)

ON_OVERFITTING = ("stop", "continue")
KEY = "callbacks.overfitting_guard"


@dataclass
class Check:
    """One PGD check: the epoch and optimiser step after which it ran, and its accuracy."""

    epoch: int
    step: int
    pgd_acc: float


@dataclass
class Detection:
    """One catastrophic overfitting: the check that fell and the best it fell from (whose weights were restored)."""

    epoch: int
    step: int
    pgd_acc: float
    best_pgd_acc: float
    best_epoch: int
    best_step: int


class CatastrophicOverfittingGuard(L.Callback):
    """PGD accuracy on a held batch of training images every ``every_n_epochs`` epochs (after the
    epoch's last optimiser step, before its validation) and/or every ``every_n_steps`` optimiser
    steps, logged as ``guard/pgd_acc``. The weights (and batch-norm statistics) of the best check
    are kept in memory, on the CPU. A check more than ``margin`` below the best is catastrophic
    overfitting: one warning names the epoch, step and both accuracies, the best weights are
    restored, and the trainer stops (``on_overfitting=stop``) or trains on from them (``continue``;
    the optimiser's state is not rolled back).

    Checking before the epoch's validation means validation and the checkpoints of that epoch
    see the restored weights, so with ``every_n_epochs=1`` no checkpoint saved at an epoch end holds
    catastrophically overfitted weights (between checks of ``every_n_epochs > 1`` one may).

    The held batch is ``num_samples`` images of the training set drawn with a private generator
    seeded by ``seed`` (the same images at every check; Wong et al. check a training minibatch):
    training data because catastrophic overfitting shows there as much as on held-out data, and it
    is there whether or not validation runs; read from the dataset by index, so the images are
    un-augmented (the datamodules augment on the device, in the training loop) and the training
    shuffle and the global random state are untouched. PGD starts from a point drawn from its own
    seeded generator, so successive checks differ by the weights alone.

    Under DDP each rank attacks its share of the held batch (``rank::world_size``) and the correct
    counts are summed over the ranks, so every rank reaches the same accuracy, the same verdict,
    and restores and stops together (each from its own copy of the best weights, which DDP keeps
    equal across ranks). The check runs in eval mode (batch-norm statistics untouched, each
    submodule's mode restored after), leaves no parameter gradients, and attacks the held batch in
    chunks of the training batch size, in the training step's precision.

    Segmenters are checked by pixel accuracy, over the pixels their objective's ``ignore_index`` keeps.
    After a resume the best is re-established from the first check (the best weights are not in the
    checkpoint; the checks and detections are).

    Args:
        enabled: off by default; ``objective=fgsm_rs`` turns it on (``conf/objective/fgsm_rs.yaml``).
        eps: L-inf budget of the PGD check in [0, 1]; None: the objective's ``eps``.
        alpha: PGD step in [0, 1]; None: ``2.5 * eps / steps``.
        steps: PGD iterations (>= 1).
        margin: the drop below the best PGD accuracy that counts, in (0, 1] (Wong et al.: 0.2).
        every_n_epochs: epochs between checks (>= 1); None: none at epoch ends.
        every_n_steps: optimiser steps between checks (>= 1); None: none within epochs.
        num_samples: training images in the held batch (>= 1; the training set when it has fewer).
        seed: seeds the held batch's draw and PGD's random start.
        on_overfitting: ``stop`` | ``continue``.
    """

    def __init__(
        self,
        enabled: bool = False,
        eps: float | str | None = None,
        alpha: float | str | None = None,
        steps: int = 10,
        margin: float = 0.2,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        num_samples: int = 256,
        seed: int = 0,
        on_overfitting: str = "stop",
    ) -> None:
        super().__init__()
        self.enabled = bool(enabled)
        self.eps = None if eps is None else _unit("eps", eps)
        self.alpha = None if alpha is None else _unit("alpha", alpha)
        self.steps = _count("steps", steps)
        margin = as_float(f"{KEY}.margin", margin)
        if not 0.0 < margin <= 1.0:
            raise ValueError(
                f"{KEY}.margin={margin:g} must be in (0, 1]: the drop of PGD accuracy below its best that counts as "
                "catastrophic overfitting (Wong et al. use 0.2)"
            )
        self.margin = margin
        self.every_n_epochs = None if every_n_epochs is None else _count("every_n_epochs", every_n_epochs)
        self.every_n_steps = None if every_n_steps is None else _count("every_n_steps", every_n_steps)
        if self.every_n_epochs is None and self.every_n_steps is None:
            raise ValueError(f"{KEY}.every_n_epochs and every_n_steps are both null: the guard would never check; "
                             f"set one (e.g. {KEY}.every_n_epochs=1), or {KEY}.enabled=false")
        self.num_samples = _count("num_samples", num_samples)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{KEY}.seed={seed!r} must be an integer")
        self.seed = seed
        if on_overfitting not in ON_OVERFITTING:
            raise ValueError(f"{KEY}.on_overfitting={on_overfitting!r} must be one of {', '.join(ON_OVERFITTING)}: "
                             "what to do after restoring the best weights (stop the run, or train on from them)")
        self.on_overfitting = on_overfitting
        self.checks: list[Check] = []
        self.detections: list[Detection] = []
        self.attack: PGD | None = None
        self._held: tuple[torch.Tensor, torch.Tensor] | None = None
        self._held_size = 0
        self._chunk: int | None = None
        self._best: Check | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._last_step: int | None = None
        self._fit_ended = False

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks], "detections": [asdict(d) for d in self.detections]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # After the fit, a checkpoint restored for the test (advmed.train tests the best one) holds the record
        # as it was at that checkpoint's epoch: it must not rewind the fit's verdict (guard/checks read 4 of 8).
        if self._fit_ended:
            return
        self.checks = [Check(**c) for c in state_dict.get("checks", [])]
        self.detections = [Detection(**d) for d in state_dict.get("detections", [])]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_ended = False

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_ended = True

    @property
    def metrics(self) -> dict[str, float]:
        """The verdict, merged into the run's metrics.json by ``advmed.train`` (and read by report.md):
        ``guard/catastrophic_overfitting`` (1 or 0), the best PGD accuracy and its epoch, the check's
        attack and margin, and at a detection its epoch, step, accuracy and what was done."""
        if not self.enabled or not self.checks:
            return {}
        best = self._best or max(self.checks, key=lambda c: c.pgd_acc)
        metrics = {
            "guard/catastrophic_overfitting": float(bool(self.detections)),
            "guard/best_pgd_acc": best.pgd_acc,
            "guard/best_epoch": float(best.epoch),
            "guard/checks": float(len(self.checks)),
            "guard/eps": _number(self.attack.eps if self.attack is not None else self.eps),
            "guard/alpha": _number(self.attack.alpha if self.attack is not None else self.alpha),
            "guard/steps": float(self.steps),
            "guard/margin": self.margin,
        }
        if self.detections:
            first = self.detections[0]
            metrics.update({
                "guard/detections": float(len(self.detections)),
                "guard/detected_at_epoch": float(first.epoch),
                "guard/detected_at_step": float(first.step),
                "guard/pgd_acc_at_detection": first.pgd_acc,
                "guard/restored_epoch": float(first.best_epoch),
                "guard/restored_pgd_acc": first.best_pgd_acc,
                "guard/stopped": float(self.on_overfitting == "stop"),
            })
        return metrics

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        eps = self.eps if self.eps is not None else getattr(getattr(pl_module, "objective", None), "eps", None)
        if eps is None:
            objective = getattr(getattr(pl_module, "objective", None), "name", "none")
            raise ValueError(
                f"{KEY}.eps is null and the objective ({objective}) has no eps to take: set {KEY}.eps (e.g. 8/255)"
            )
        self.attack = PGD(eps=float(eps), alpha=self.alpha, steps=self.steps, random_start=True, seed=self.seed)
        self._held = self._draw_held_batch(trainer, pl_module)
        self._best, self._best_state, self._last_step = None, None, None
        if trainer.is_global_zero:
            log.info(
                "overfitting guard: PGD(eps=%.4g, alpha=%.4g, steps=%d, random start) on %d training images (seed %d) "
                "every %s; a drop of more than %.3g below the best PGD accuracy restores its weights and %s",
                self.attack.eps, self.attack.alpha, self.steps, self._held_size, self.seed, self._schedule(),
                self.margin, "stops" if self.on_overfitting == "stop" else "continues",
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self.enabled or self._held is None:
            return
        step = trainer.global_step
        if step == self._last_step:  # accumulating gradients: no optimiser step since the last check
            return
        step_due = self.every_n_steps is not None and step > 0 and step % self.every_n_steps == 0
        last_batch = trainer.is_last_batch or batch_idx + 1 >= trainer.num_training_batches
        epoch_due = self.every_n_epochs is not None and last_batch and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if step_due or epoch_due:
            self._last_step = step
            self.check(trainer, pl_module)

    # ------------------------------------------------------------------ work

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """Run one check now: PGD accuracy on the held batch, logged; the best weights kept; a
        catastrophic drop handled. Returns the accuracy."""
        current = Check(int(trainer.current_epoch), int(trainer.global_step), self.robust_accuracy(trainer, pl_module))
        self.checks.append(current)
        # The same on every rank (pooled above): sync_dist only spares Lightning's DDP warning.
        pl_module.log("guard/pgd_acc", current.pgd_acc, on_step=False, on_epoch=True, sync_dist=True)
        best = self._best
        if best is None or current.pgd_acc >= best.pgd_acc:
            self._best = current
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
        elif best.pgd_acc - current.pgd_acc > self.margin:
            self._overfitted(trainer, pl_module, current, best)
        return current.pgd_acc

    def robust_accuracy(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """PGD accuracy on the held batch (pooled over the DDP ranks), the model in eval mode meanwhile, in
        chunks of the training batch size (the memory of a training step) and in the training step's
        precision (Lightning's autocast under ``bf16-mixed``, as the objectives' inner attacks run)."""
        ignore_index = getattr(getattr(pl_module, "objective", None), "ignore_index", None)
        precision = trainer.strategy.precision_plugin
        correct = torch.zeros((), device=pl_module.device)
        total = torch.zeros((), device=pl_module.device)
        x_all, y_all = self._held
        for start in range(0, len(y_all), self._chunk or len(y_all)):
            x, y = (t[start:start + (self._chunk or len(y_all))].to(pl_module.device) for t in (x_all, y_all))
            labels, weight = valid_pixels(y, ignore_index)
            with precision.forward_context():
                x_adv = self.attack.run(pl_module, precision.convert_input(x), labels,
                                        mask=None if weight is None else weight.bool()).x_adv
                with torch.no_grad(), eval_mode(pl_module):
                    hit = (pl_module(x_adv).argmax(1) == labels).float()
            correct += hit.sum() if weight is None else (hit * weight).sum()
            total += hit.numel() if weight is None else weight.sum()
        counts = trainer.strategy.reduce(torch.stack([correct, total]), reduce_op="sum")
        return float(counts[0] / counts[1].clamp_min(1))

    def _overfitted(self, trainer: L.Trainer, pl_module: L.LightningModule, current: Check, best: Check) -> None:
        self.detections.append(Detection(current.epoch, current.step, current.pgd_acc, best.pgd_acc, best.epoch, best.step))
        pl_module.load_state_dict(self._best_state)
        stop = self.on_overfitting == "stop"
        if stop:
            trainer.should_stop = True
        if trainer.is_global_zero:
            log.warning(
                "catastrophic overfitting detected at epoch %d (step %d): PGD accuracy on the guard's %d held training "
                "images fell from %.4f (best, epoch %d, step %d) to %.4f, more than %s.margin=%.3g below; restored the "
                "weights of epoch %d, step %d, and %s (%s.on_overfitting=%s)",
                current.epoch, current.step, self._held_size, best.pgd_acc, best.epoch, best.step, current.pgd_acc,
                KEY, self.margin, best.epoch, best.step,
                "stopping the run" if stop else "training on from them", KEY, self.on_overfitting,
            )

    def _draw_held_batch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise ValueError(f"{KEY} draws its held batch from the training DataLoader's dataset, but the training "
                             f"data is a {type(loader).__name__}: give the module one training DataLoader")
        dataset = loader.dataset
        count = min(self.num_samples, len(dataset))
        if count < trainer.world_size:
            raise ValueError(f"{KEY}: {count} held image(s) for {trainer.world_size} ranks; each rank needs one: "
                             f"raise {KEY}.num_samples (now {self.num_samples}) or use a larger training set")
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))[:count].sort().values
        self._held_size = count
        self._chunk = loader.batch_size  # None for a loader with a batch sampler: the held batch at once
        share = order[trainer.global_rank::trainer.world_size].tolist()
        # A dataset may draw random numbers while reading (none of advmed's do): keep the training stream as it was.
        with torch.random.fork_rng(devices=[]):
            batch = default_collate([dataset[i] for i in share])
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise ValueError(f"{KEY} needs training items (image, label); {type(dataset).__name__} gives "
                             f"{type(batch).__name__} batches")
        return batch[0], batch[1]

    def _schedule(self) -> str:
        parts = [f"{n} epoch(s)" for n in [self.every_n_epochs] if n is not None]
        parts += [f"{n} step(s)" for n in [self.every_n_steps] if n is not None]
        return " and every ".join(parts)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _unit(name: str, value: object) -> float:
    return check_unit(name, value, KEY)


def _count(name: str, value: object) -> int:
    return check_steps(value, name, KEY)
