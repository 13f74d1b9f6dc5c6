"""The base of the iterative attacks (:class:`IterativeAttack`) and their loop: gradient steps,
projection, early stop of fooled samples and the per-step trace."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.trace import TraceRecorder
from advmed.attacks.core.validation import as_float, check_alpha, check_steps


class IterativeAttack(Attack):
    """Base of the iterative attacks (BIM, PGD, PGD-L2): ``steps`` gradient steps of size
    ``alpha``, each followed by the projection onto the budget and onto [0, 1].

    Subclasses set ``alpha_rule`` (the default ``alpha = alpha_rule * eps / steps``) and
    implement :meth:`_step`; random-start attacks override :meth:`_start` and set
    ``random_start`` (the trace then reads the clean prediction with one more forward). The
    loop passes the 0-based step index to the attack's objective (``objective(..., step=i)``),
    so an attack whose loss changes over the iterations (SegPGD) only replaces its objective.

    Args (beyond :class:`Attack`'s):
        alpha: step size; None: ``alpha_rule * eps / steps``, so overriding only ``eps`` or
            ``steps`` keeps a sensible step.
        steps: number of iterations (>= 1).
        early_stop: stop updating a sample once it is fooled (untargeted: prediction != y;
            targeted: prediction == target; segmentation: at least ``fooled_fraction`` of the
            loss's pixels are fooled). Fooled samples leave the batch, which saves compute.
        fooled_fraction: in (0, 1]; the segmentation threshold above.
        trace: also return an :class:`AttackTrace` of the predictions after every step.
    """

    alpha_rule: ClassVar[float]
    random_start: bool = False

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        *,
        early_stop: bool = False,
        fooled_fraction: float = 0.5,
        trace: bool = False,
        **common,
    ):
        super().__init__(eps, **common)
        self.steps = check_steps(steps)
        explicit = check_alpha(alpha)
        self.alpha = explicit if explicit is not None else self.alpha_rule * self.eps / self.steps
        self.early_stop = bool(early_stop)
        self.fooled_fraction = as_float("fooled_fraction", fooled_fraction)
        if not 0 < self.fooled_fraction <= 1:
            raise ValueError(f"fooled_fraction must be in (0, 1], got {self.fooled_fraction:g}")
        self.trace = bool(trace)

    def _start(self, x: Tensor) -> Tensor:
        """The first iterate: ``x`` itself (no random start)."""
        return x

    @abc.abstractmethod
    def _step(self, x_adv: Tensor, grad: Tensor, x: Tensor) -> Tensor:
        """A new iterate: ascend along ``grad``, project onto the budget around ``x`` and onto [0, 1].
        ``grad`` is the attack's own buffer and may be overwritten."""

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        x_adv = self._start(x)
        recorder = TraceRecorder(batch.y, self.steps) if self.trace else None
        if recorder is not None and self.random_start:
            recorder.clean(batch.predict(x))
        active: Tensor | None = None  # indices of the samples still updated; None = all (no gathers)
        for i in range(self.steps):
            x_cur = x_adv if active is None else x_adv[active]
            # The step index reaches the objective: SegPGD's loss weights change with it.
            logits, grad = batch.gradient(x_cur, active, step=i)
            # These logits are the prediction on the iterate after step i: trace row i - 1.
            if recorder is not None and i == 0:
                recorder.start(logits)
            elif recorder is not None:
                recorder.record(logits, active)
            if self.early_stop:
                fooled = batch.fooled(logits, active)
                if bool(fooled.any()):
                    keep = ~fooled
                    active = (torch.arange(x.shape[0], device=x.device) if active is None else active)[keep]
                    if active.numel() == 0:
                        break
                    x_cur, grad = x_cur[keep], grad[keep]
            if active is None:
                x_adv = self._step(x_cur, grad, x)
            else:
                # Out of place: x_adv may still be the caller's x.
                x_adv = x_adv.index_copy(0, active, self._step(x_cur, grad, x[active]))
        trace = None
        if recorder is not None:
            moved = x_adv if active is None else x_adv[active]
            trace = recorder.finish(batch.predict(moved) if moved.shape[0] else None, active)
        # Never hand back the caller's own storage (every sample may have been fooled at x).
        return AttackResult(x.clone() if x_adv is x else x_adv, trace)
