"""What APGD keeps while a run goes: per sample the highest-loss fooled iterate (:class:`RunObserver`)
and, with ``trace=True``, the scores of the result the call would return after each iteration
(:class:`KeptTrace`). Fed by :func:`advmed.attacks.core.apgd_loop.apgd_run` after every iterate."""

from __future__ import annotations

import torch
from torch import Tensor

from advmed.attacks.core.apgd_loop import Iterate, rows
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.trace import AttackTrace, segmentation_scores


def _scores(logits: Tensor, y: Tensor) -> dict[str, Tensor]:
    """A trace row's fields for these logits (as :class:`AttackTrace` defines them)."""
    if logits.ndim == 2:
        confidence, pred = logits.float().softmax(1).max(1)
        return {"pred": pred, "confidence": confidence}
    dice, pixel_acc = segmentation_scores(logits.argmax(1), y, logits.shape[1])
    return {"dice": dice, "pixel_acc": pixel_acc}


def _pick(mask: Tensor, a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.where(mask, a[k], b[k]) for k in a}


class KeptTrace:
    """APGD's trace: after every iteration of every run, the scores of the result the call would
    return if it ended there (computed from the logits the loop has anyway)."""

    def __init__(self, y: Tensor, clean: Tensor):
        self.y = y
        self.clean = _scores(clean, y)
        self.out = self.clean  # the call's result so far: x itself
        self.rows: list[dict[str, Tensor]] = []

    def observe(self, it: Iterate, run: RunObserver, better_fool: Tensor | None) -> None:
        cur = _scores(it.logits, self.y[run.idx])
        if it.step == 0:  # the start is a candidate; rows come after steps
            self.best, self.fool = cur, cur
            return
        self.best = _pick(it.better, cur, self.best)
        self.fool = _pick(better_fool, cur, self.fool)
        # The rule _perturb applies when the run ends, applied after this iteration.
        improved = ~run.fooled & (it.best_loss > run.out_loss)
        out = {k: v[run.idx] for k, v in self.out.items()}
        kept = _pick(run.fooled, self.fool, _pick(improved, self.best, out))
        self.rows.append({k: v.index_copy(0, run.idx, kept[k]) for k, v in self.out.items()})

    def end_run(self) -> None:
        self.out = self.rows[-1]

    def finish(self, k: int) -> AttackTrace:
        self.rows.extend([self.out] * (k - len(self.rows)))  # runs skipped: every sample fooled
        fields = {name: torch.stack([row[name] for row in self.rows]) for name in self.out}
        fields.update({f"clean_{name}": v for name, v in self.clean.items()})
        return AttackTrace(**fields)


class RunObserver:
    """The observer of one run on the samples ``idx``: keeps each sample's highest-loss fooled
    iterate (and feeds the trace); with ``early_stop`` it tells the loop that fooled samples are done."""

    def __init__(
        self, batch: AttackBatch, idx: Tensor, out_loss: Tensor, trace: KeptTrace | None, early_stop: bool = False
    ):
        self.batch, self.idx, self.out_loss, self.trace, self.early_stop = batch, idx, out_loss, trace, early_stop

    def __call__(self, it: Iterate) -> Tensor | None:
        now = self.batch.fooled(it.logits, self.idx)
        better_fool = None
        if it.step == 0:
            self.fooled = now
            self.x_fool, self.fool_loss = it.x, torch.where(now, it.loss, float("-inf"))
        else:
            better_fool = now & (it.loss > self.fool_loss)
            self.x_fool = torch.where(rows(better_fool), it.x, self.x_fool)
            self.fool_loss = torch.where(better_fool, it.loss, self.fool_loss)
            self.fooled = self.fooled | now
        if self.trace is not None:
            self.trace.observe(it, self, better_fool)
        return self.fooled if self.early_stop else None  # early stop: a fooled sample is done
