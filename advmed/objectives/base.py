"""What every training objective shares: the call, its output and the build-time checks.

An objective is the loss of one training step given the model, the clean batch and the training
attack (DESIGN.md, Layout: ``objectives/``). Like an attack it is built from config before any
model exists and takes the model when called, so one object serves any classifier or segmenter::

    objective = TRADES(beta=6.0, eps=8 / 255)        # or build_objective(cfg.objective)
    objective.check_task("classification")           # at build time: a clear message, not mid-training
    attack = objective.training_attack(train_attack) # the attack it trains against (None: its own or none)
    out = objective(model, x, y, criterion, attack)  # in training_step
    out.loss.backward()

``criterion(logits, labels, weight)`` is the model's own loss (cross-entropy for a classifier;
``model.loss`` for a segmenter) averaged over the samples, or, with ``weight`` (a 0/1 float mask
shaped like ``labels``), over the pixels it keeps. Objectives whose terms are the model's loss
call it; the divergences and MART's boosted cross-entropy are their own
(:mod:`advmed.objectives.divergences`).

Inner maximisations (the training attack, TRADES's KL ascent, FGSM-RS's step) run the model in
eval mode, so batch-norm statistics are untouched, and take gradients w.r.t. the input only, so
no parameter ``.grad`` is left behind; the model's mode is restored after. They run in the
precision around the call: under ``trainer.precision=bf16-mixed`` Lightning's autocast covers the
whole training step, inner loops included, while images stay float32 in [0, 1].
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from advmed.attacks.core.base import Attack
from advmed.objectives.validation import check_ignore_index

TASKS = ("classification", "segmentation")

Criterion = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
"""``criterion(logits, labels, weight) -> scalar``: the model's own loss (see the module docstring)."""


@dataclass
class ObjectiveOutput:
    """What one objective call produced.

    Attributes:
        loss: the scalar to minimise (differentiable w.r.t. the model's parameters).
        logits: the logits whose accuracy is the step's ``train/acc``, rows matching ``y``: of the
            images the (first) classification term trains on (see each objective).
        terms: named parts of the loss, detached, logged as ``train/<name>`` (e.g. ``natural_loss``,
            ``robust_loss``); empty when the loss is one term.
    """

    loss: Tensor
    logits: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class Objective(abc.ABC):
    """Base of the training objectives. Subclasses implement :meth:`__call__` and may override
    :meth:`training_attack` (what they do with ``attack@train_attack``).

    Args:
        ignore_index: segmentation only: a label whose pixels are left out of every term (and of
            the inner maximisation); None: every pixel counts.

    ``name`` is the objective's config name (``conf/objective/<name>.yaml``), used in messages;
    ``tasks`` the model families it trains.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = TASKS

    def __init__(self, *, ignore_index: int | None = None) -> None:
        self.ignore_index = check_ignore_index(ignore_index)

    def check_task(self, task: str) -> None:
        """Raise ValueError when the objective, as configured, cannot train a ``task`` model
        (``classification`` | ``segmentation``); called when the module is built."""
        if task not in TASKS:
            raise ValueError(f"task={task!r} must be one of {', '.join(TASKS)}")
        if task not in self.tasks:
            raise ValueError(
                f"objective={self.name} trains {' and '.join(self.tasks)} models, not this {task} model: "
                f"choose an objective for {task} (e.g. objective=standard, pgd_at or trades)"
            )
        if task == "classification" and self.ignore_index is not None:
            raise ValueError(
                f"objective.ignore_index={self.ignore_index} is a segmentation setting (pixels left out of the "
                "loss) but the model is a classifier with one label per image: set objective.ignore_index=null"
            )

    def training_attack(self, train_attack: Attack | None) -> Attack | None:
        """The attack this objective trains against, given ``attack@train_attack`` (None: none
        configured); called once when the module is built. Default: the configured one, unused by
        objectives that need none."""
        return train_attack

    @abc.abstractmethod
    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: Criterion, attack: Attack | None = None
    ) -> ObjectiveOutput:
        """The loss of one training step on the clean batch ``x`` (float in [0, 1], (N, C, H, W)) with
        labels ``y`` ((N,) or (N, H, W)); ``attack`` is what :meth:`training_attack` returned."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
