"""Auto-PGD (APGD): PGD with momentum whose step size adapts per sample, under an L-inf or an L2 budget.

Written by hand: no maintained library offers APGD as an advmed attack (model given at call
time, per-sample losses, segmentation through the shared objective, the few-class cases of
medical data). The reference implementation (fra31/auto-attack, ``autopgd_base.py``) and
``torchattacks.APGD`` were read for the defaults; where they differ from the paper's
Algorithm 1, this module follows the paper (see :class:`APGD`, "Differences"). The loop of one
run lives in :mod:`advmed.attacks.core.apgd_loop`, shared with SEA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from advmed.attacks.core.apgd_loop import FLOOR, apgd_run, loss_and_gradient, per_sample_norm, rows
from advmed.attacks.core.apgd_loop import checkpoints as checkpoints  # public here too (tests, docs)
from advmed.attacks.core.apgd_observers import KeptTrace, RunObserver
from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.margin_losses import (
    FEW_CLASS_STAND_INS,
    dlr_loss,
    loss_for_classes,
    margin_loss,
    target_classes,
    targeted_ce_loss,
    targeted_dlr_loss,
)
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.validation import (
    as_float,
    check_count,
    check_seed,
    check_steps,
    looks_like_probabilities,
)

log = logging.getLogger(__name__)

# The losses of the shared objective (advmed.attacks.core.losses) and APGD's own, classification-only ones.
OBJECTIVE_LOSSES = ("ce", "dice")
DLR_LOSSES = ("dlr", "dlr-targeted")
NORMS = ("linf", "l2")


# The classification losses APGD adds, as functions of (logits, y, target).
_OWN_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "dlr": lambda z, y, t: dlr_loss(z, y),
    "margin": lambda z, y, t: margin_loss(z, y),
    "dlr-targeted": targeted_dlr_loss,
    "ce-targeted": lambda z, y, t: targeted_ce_loss(z, t),
}


class APGD(Attack):
    """APGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", Algorithm 1): PGD with momentum whose step
    size starts at ``2 * eps`` and is halved, per sample, at the checkpoints ``w_j`` (see
    :func:`checkpoints`) when

    1. the loss rose in fewer than ``rho * (w_j - w_{j-1})`` of the steps since ``w_{j-1}``, or
    2. the step size was not halved at ``w_{j-1}`` and the best loss has not grown since,

    after which the sample restarts from its best point so far. One iteration (paper eq. 3):
    ``z = P(x_k + eta * s(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``
    with ``alpha = 0.75`` (``alpha = 1`` for the first step), ``s`` the sign (L-inf) or the
    L2-normalised gradient (L2), ``P`` the projection onto the eps-ball and [0, 1].

    Losses: ``"ce"`` (APGD-CE) and ``"dice"`` through the shared objective (classification and
    segmentation), and, for classification only, ``"dlr"`` (APGD-DLR, paper eq. 5) and
    ``"dlr-targeted"`` (APGD-T, eq. 6: one run per target, the targets being the 2nd, 3rd, ...
    most likely classes of the clean input, ``min(n_target_classes, K - 1)`` of them).
    ``loss="dlr"`` with ``targeted=True`` ascends the targeted DLR toward the given targets.
    DLR needs K >= 3 classes and targeted DLR K >= 4: below that APGD ascends the margin
    ``max_{i != y} z_i - z_y`` (for DLR) or the targeted cross-entropy (for targeted DLR),
    logs one warning naming the substitution and records it in ``attack.substitutions``
    (``{"dlr": "margin"}``, ``{"dlr-targeted": "ce-targeted"}``) — it never crashes.

    A sample is fooled when misclassified (untargeted), predicted as its target (targeted) or,
    for segmentation, when at least ``fooled_fraction`` of its loss pixels are. Samples fooled
    on the clean input are not attacked; each restart (and each target of APGD-T) runs only
    on the samples not yet fooled, from a new random start. The result holds, per sample, the
    highest-loss fooled iterate of the run that fooled it (x itself when the clean input is
    fooled), else the highest-loss point seen (the clean input included).

    Trace (``trace=True``; the call returns ``(x_adv, trace)``): the iterations of all runs are
    counted in order (each target's restarts, target after target), ``k = steps * n_restarts *
    number of targets`` rows; row ``j`` holds, per sample, the prediction and confidence
    (classification) or the Dice and pixel accuracy (segmentation) of the result the call would
    return had it ended after its ``(j + 1)``-th iteration — the kept result, by the rule above,
    not the raw iterate. So a success-vs-iterations curve reads ``trace.pred != y`` row by row: a
    sample counts as fooled from the first iterate that fools it, and the last row is the
    prediction on the returned ``x_adv``. Samples not in a run (fooled before it) repeat their
    value; the rows of runs skipped because every sample was fooled repeat the last row. The
    rows come from the forwards the loop does anyway (no extra forward); with ``eot_iter > 1``
    from the last of each iteration's passes.

    Args:
        eps: budget; L-inf: in [0, 1]; L2: a radius >= 0 in [0, 1]-pixel units over (C, H, W).
        norm: ``"Linf"`` or ``"L2"`` (case-insensitive; stored as ``"linf"`` / ``"l2"``).
        steps: iterations per run (the paper's N_iter, 100 as in AutoAttack).
        n_restarts: runs per target (random restarts), each on the samples still not fooled.
        loss: ``"ce"``, ``"dice"``, ``"dlr"`` or ``"dlr-targeted"`` (above).
        rho: condition 1's threshold, in (0, 1].
        n_target_classes: APGD-T's number of targets (capped at K - 1).
        random_start: start each run from a random point of the ball's surface (L-inf:
            ``eps * u / ||u||_inf`` with ``u ~ U(-1, 1)``; L2: ``eps * g / ||g||_2`` with
            ``g ~ N(0, I)``, as the original), clipped to [0, 1]; False: from ``x``.
        seed: seeds a private generator for the random starts, so a call neither depends on
            nor advances the global RNG (0 as the original: a rerun gives the same figure);
            None: the global RNG.
        fooled_fraction: in (0, 1]; the segmentation threshold above. The default 1.0 keeps
            raising the loss of every image that still has a correct pixel.
        eot_iter: Expectation over Transformation (Athalye et al. 2018): each iteration's
            gradient is the mean over ``eot_iter`` forward/backward passes, for randomised
            models (AutoAttack's ``version="rand"`` uses 20); 1: one pass (deterministic
            models). The loss and prediction of an iteration are those of its last pass, as in
            the reference. Costs ``eot_iter`` times the passes.
        early_stop: stop attacking a sample once it is fooled (no more forward or backward
            passes for it; its result is the iterate that first fooled it). The fooled set, and so
            the robust accuracy, is the same as without (every sample's run is independent of the
            others'); what changes is the image returned for a fooled sample. AutoAttack sets it:
            there only whether a sample is fooled counts. Default False, as the original.
        trace: also return the :class:`AttackTrace` described above.
        Other keyword args (targeted, target_class, loss_classes, amp_dtype, channels_last):
            see :class:`Attack`.

    Differences from the reference implementation and ``torchattacks.APGD`` (both pinned to the
    paper here; they agree with each other):

    * checkpoints are ``ceil(p_j * steps)``; the reference counts ``int(0.22 * steps)``,
      ``int(0.03 * steps)``, ``int(0.06 * steps)``, which agree with the paper only when
      ``steps`` is a multiple of 100 (for 10 steps: 2, 3, 4, ... instead of 3, 5, 6, ...);
    * condition 1 is strict (``<``, the paper) and its first interval compares ``f(x_1)`` with
      ``f(x_0)``; the reference uses ``<=`` and compares ``f(x_1)`` with 0;
    * condition 2 can hold at the first checkpoint (``eta`` is unchanged since ``w_0``); the
      reference starts as if the step had just been halved;
    * after a restart from the best point, the next rise is counted against the best loss
      (``x_{k+1}`` is the best point), not against the discarded iterate's loss;
    * the result of a sample that stays robust is its highest-loss point, not ``x``; that of a
      fooled sample its highest-loss fooled iterate, not the last one.

    Like the original, every sample of a run keeps iterating until the run ends (the fooled
    ones too: their result is the highest-loss fooled iterate), unless ``early_stop``.
    """

    def __init__(
        self,
        eps: float,
        norm: str = "Linf",
        steps: int = 100,
        n_restarts: int = 1,
        *,
        loss: str = "ce",
        rho: float = 0.75,
        n_target_classes: int = 9,
        random_start: bool = True,
        seed: int | None = 0,
        fooled_fraction: float = 1.0,
        eot_iter: int = 1,
        early_stop: bool = False,
        trace: bool = False,
        **common,
    ):
        norm_name = str(norm).lower()
        if norm_name not in NORMS:
            raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
        if loss not in OBJECTIVE_LOSSES + DLR_LOSSES:
            raise ValueError(
                f"loss must be one of {OBJECTIVE_LOSSES}, got {loss!r} (APGD also takes {DLR_LOSSES})"
            )
        # Set before the base checks eps: L-inf in [0, 1], L2 any radius >= 0.
        self.norm = norm_name
        self._eps_upper = None if norm_name == "l2" else 1.0
        # The shared objective knows ce and dice; the DLR losses are APGD's (the objective then
        # only supplies the pixel weights of mask and loss_classes).
        super().__init__(eps, loss="ce" if loss in DLR_LOSSES else loss, **common)
        self.loss = loss
        if loss == "dlr-targeted" and self.targeted:
            raise ValueError(
                "loss='dlr-targeted' (APGD-T) picks its own targets (the most likely wrong classes) and "
                "must be untargeted; to pull toward given targets use loss='dlr' with targeted=true"
            )
        self.steps = check_steps(steps)
        self.n_restarts = check_count("n_restarts", n_restarts)
        self.rho = as_float("rho", rho)
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho:g}")
        self.n_target_classes = check_count("n_target_classes", n_target_classes)
        self.random_start = bool(random_start)
        self.seed = check_seed(seed)
        self.fooled_fraction = as_float("fooled_fraction", fooled_fraction)
        if not 0 < self.fooled_fraction <= 1:
            raise ValueError(f"fooled_fraction must be in (0, 1], got {self.fooled_fraction:g}")
        self.eot_iter = check_count("eot_iter", eot_iter)
        self.early_stop = bool(early_stop)
        self.trace = bool(trace)
        # What replaced a DLR loss in the last call, {asked: used} (empty when nothing was replaced).
        self.substitutions: dict[str, str] = {}
        self._warned: set[str] = set()  # each warning once per attack, not once per batch

    # ------------------------------------------------------------------ the call

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        clean = batch.predict(x)  # also checks the logits against the labels (K >= 2, shapes)
        self._check_output(clean)
        used = self._resolve_loss(clean.shape[1])
        targets = self._targets(batch, clean, used)
        gen = torch.Generator(device=x.device).manual_seed(self.seed) if self.seed is not None else None
        trace = KeptTrace(batch.y, clean) if self.trace else None

        fooled = batch.fooled(clean, None)
        x_out = x.clone()  # never the caller's storage
        # The clean input is a candidate too, at its best value under the runs' objectives.
        out_loss = torch.stack(
            [self._loss_fn(batch, used, None, t)(clean) for t in targets]
        ).amax(0)
        everyone = torch.arange(x.shape[0], device=x.device)
        for target in targets:
            for _ in range(self.n_restarts):
                idx = everyone[~fooled]
                if idx.numel() == 0:
                    break
                run = RunObserver(batch, idx, out_loss[idx], trace, self.early_stop)
                x_max, f_max = self._run(batch, idx, partial(self._loss_fn, batch, used, target=target), gen, run)
                # Fooled: the run's highest-loss fooled iterate; else the best point if it beats the last.
                improved = ~run.fooled & (f_max > out_loss[idx])
                kept = torch.where(rows(improved), x_max, x_out[idx])
                x_out.index_copy_(0, idx, torch.where(rows(run.fooled), run.x_fool, kept))
                out_loss[idx] = torch.where(improved, f_max, out_loss[idx])
                fooled[idx] = run.fooled
                if trace is not None:
                    trace.end_run()
        k = self.steps * self.n_restarts * len(targets)
        return AttackResult(x_out, None if trace is None else trace.finish(k))

    def _check_output(self, clean: Tensor) -> None:
        if looks_like_probabilities(clean):
            self._warn_once(
                "probabilities",
                "APGD: the model's outputs look like probabilities (every row in [0, 1], summing to 1); "
                "APGD's losses and its step-size rule need logits: drop the final softmax",
            )
        if self.loss in DLR_LOSSES and clean.ndim != 2:
            raise ValueError(
                f"loss={self.loss!r} is defined on classification logits (N, K), got {tuple(clean.shape)}; "
                "for segmentation use loss='ce' or loss='dice'"
            )

    def _resolve_loss(self, k: int) -> str:
        """The loss APGD ascends with ``k`` classes: the one asked for, or its few-class stand-in."""
        asked = "dlr-targeted" if (self.loss == "dlr" and self.targeted) else self.loss
        used = loss_for_classes(asked, k)
        if used != asked:
            self._warn_once(
                f"{asked}->{used}",
                f"APGD: loss {asked!r} needs >= {FEW_CLASS_STAND_INS[asked][0]} classes but the model has {k}: "
                f"using {used!r} instead ({'max_(i != y) z_i - z_y' if used == 'margin' else '-CE(z, target)'})",
            )
        self.substitutions = {asked: used} if used != asked else {}
        return used

    def report_notes(self, metrics: dict[str, float]) -> list[str]:
        return [f"loss {a!r} is undefined for this model's classes; {u!r} was used" for a, u in self.substitutions.items()]

    def _targets(self, batch: AttackBatch, clean: Tensor, used: str) -> list[Tensor | None]:
        """One entry per group of runs: the target labels ``(N,)`` of each APGD-T run, the given
        targets of a targeted DLR run, None when the loss needs no target."""
        if used not in ("dlr-targeted", "ce-targeted"):
            return [None]
        if self.targeted:
            return [batch.ref]
        return list(target_classes(clean, self.n_target_classes).unbind(1))

    def _loss_fn(
        self, batch: AttackBatch, used: str, idx: Tensor | None, target: Tensor | None
    ) -> Callable[[Tensor], Tensor]:
        """The per-sample loss ``(n,)`` of the samples ``idx`` (all when None) as a function of
        their logits. Not AttackBatch.gradient's objective: the DLR losses need the true labels
        and the run's targets together, which its call ``(logits, ref, weight)`` cannot carry."""
        def pick(t: Tensor | None) -> Tensor | None:
            return t if t is None or idx is None else t[idx]

        y, ref, weight, target = pick(batch.y), pick(batch.ref), pick(batch.weight), pick(target)
        if used in OBJECTIVE_LOSSES:
            return lambda logits: self.objective(logits, ref, weight)
        own = _OWN_LOSSES[used]

        def loss_fn(logits: Tensor) -> Tensor:
            value = own(logits, y, target)
            # Classification weights (mask, loss_classes) are per sample: 0 leaves a sample alone.
            return value if weight is None else value * weight

        return loss_fn

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    # ------------------------------------------------------------------ one run (Algorithm 1)

    def _run(
        self,
        batch: AttackBatch,
        idx: Tensor,
        loss_for: Callable[[Tensor], Callable[[Tensor], Tensor]],
        gen: torch.Generator | None,
        observe: RunObserver,
    ) -> tuple[Tensor, Tensor]:
        """One APGD run on the samples ``idx`` from a fresh start: (best point, best loss), per
        sample, indexed like ``idx``; ``loss_for(samples)`` gives the loss of those samples;
        ``observe`` keeps the fooled iterates (and, with early_stop, retires them)."""
        x = batch.x[idx]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss_fn = loss_for(idx)

        def evaluate(point: Tensor, running: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
            fn = loss_fn if running is None else loss_for(idx[running])
            return loss_and_gradient(batch.model, point, fn, amp_dtype=self.amp_dtype, eot_iter=self.eot_iter)

        return apgd_run(
            x, self._start(x, gen), evaluate, eps=self.eps, norm=self.norm, steps=self.steps, rho=self.rho,
            observe=observe,
        )

    def _start(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """A random point on the surface of the eps-ball around ``x`` (as the original), in [0, 1]."""
        if not self.random_start:
            return x
        # Drawn in the standard layout, so the start does not depend on channels_last.
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        if self.norm == "linf":
            noise.uniform_(0, 1, generator=gen).mul_(2).sub_(1)
            scale = noise.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(FLOOR)
        else:
            noise.normal_(generator=gen)
            scale = per_sample_norm(noise) + FLOOR
        return torch.add(x, self.eps * noise / scale).clamp_(0, 1)
