"""SEA, the Segmentation Ensemble Attack (Croce, Singh & Hein, ECCV 2024, "Towards reliable
evaluation and fast training of robust semantic segmentation models", arXiv:2306.12941): APGD with a
progressive radius reduction, run once per per-pixel loss, and the per-image worst case over the
runs — the evaluation of a segmenter's robustness that DESIGN.md (contract 11) asks for.

Written for advmed rather than wrapped: the reference (``nmndeep/Robust-Segmentation``,
``semseg/attacker.py: apgd_largereps`` and ``tools/worse_only.py``) holds dataset-level state
(class weights, the predictions of the whole split) in research scripts; an advmed attack takes
the model at call time, sees one batch in Lightning's test step, and reports per-image figures.
The loop is APGD's (:mod:`advmed.attacks.core.apgd_loop`), the losses are in
:mod:`advmed.attacks.core.segmentation_losses`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from advmed.attacks.core.apgd_loop import Iterate, apgd_run, loss_and_gradient, project, rows
from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.losses import cross_entropy
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.segmentation_losses import (
    SEA_LOSSES,
    balanced_pixel_weights,
    class_overlaps,
    pixel_accuracy,
    sea_loss,
)
from advmed.attacks.core.validation import as_float, check_count, check_seed

# The reference's apgd_largereps: 30 % of the iterations at 2 eps, 30 % at 1.5 eps, the rest at eps.
SCHEDULE: tuple[tuple[float, float], ...] = ((0.3, 2.0), (0.3, 1.5), (0.4, 1.0))
SELECT = ("pixel_acc", "miou")
# tools/worse_only.py: at most 1000 rounds of the greedy mIoU search.
MAX_ROUNDS = 1000


def radius_stages(steps: int, schedule: Sequence[Sequence[float]] = SCHEDULE) -> list[tuple[int, float]]:
    """The stages of the paper's progressive radius reduction (PRR): ``(iterations,
    radius factor)`` per stage. Every stage but the last gets ``floor(fraction * steps)``
    iterations (as the reference's ``int(0.3 * n_iter)``; computed with a 1e-9 guard so that a
    product such as 0.3 * 300 = 89.99999999999999 still counts 90), the last the rest; stages
    left with no iteration are dropped. 300 steps: ``[(90, 2.0), (90, 1.5), (120, 1.0)]``."""
    counts = [math.floor(fraction * steps + 1e-9) for fraction, _ in schedule[:-1]]
    counts.append(steps - sum(counts))
    return [(n, float(factor)) for n, (_, factor) in zip(counts, schedule) if n > 0]


def miou_of(inter: Tensor, union: Tensor) -> Tensor:
    """Mean IoU over the classes with a non-empty union (last dim), as the reference's
    ``_compute_miou``."""
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    return iou.sum(-1) / present.sum(-1).clamp_min(1)


def greedy_miou_choice(inter: Tensor, union: Tensor, start: int = 0) -> Tensor:
    """Which of ``L`` attacks to keep for each of ``N`` images so that the mIoU of the whole set
    is low: ``inter``, ``union`` ``(L, N, K)`` per attack, image and class (from
    :func:`~advmed.attacks.core.segmentation_losses.class_overlaps`); returns ``(N,)`` indices.

    The mIoU of a set is not a sum over images, so the per-image worst case of pixel accuracy does
    not minimise it. The reference (``tools/worse_only.py``) searches greedily over the whole
    validation set: every image starts with the first attack (Mask-CE-Bal); in rounds over the
    images in random order, an image switches attack whenever that lowers the mIoU. Here, with
    no randomness and no loop over images: every round evaluates all ``N * L`` single switches at
    once and makes the one that lowers the mIoU most, until none does (at most ``MAX_ROUNDS * N``
    switches). Both stop at a point where no single switch lowers the mIoU. Pass the statistics
    of a whole split (summed per image over batches) to apply the reference's dataset-level rule.
    """
    inter, union = inter.double(), union.double()
    n = inter.shape[1]
    images = torch.arange(n, device=inter.device)
    choice = torch.full((n,), start, dtype=torch.long, device=inter.device)
    total_i, total_u = inter[start].sum(0), union[start].sum(0)
    current = miou_of(total_i, total_u)
    for _ in range(MAX_ROUNDS * n):
        # Totals if image j used attack l instead of its current one: (L, N, K).
        cand_i = total_i + inter - inter[choice, images]
        cand_u = total_u + union - union[choice, images]
        scores = miou_of(cand_i, cand_u)
        best = int(scores.argmin())
        if not scores.view(-1)[best] < current - 1e-12:
            break
        attack, j = divmod(best, n)
        choice[j] = attack
        total_i, total_u, current = cand_i[attack, j], cand_u[attack, j], scores[attack, j]
    return choice


class _LowestAccuracy:
    """The observer of one APGD stage: keeps, per image, the iterate with the lowest pixel
    accuracy (ties: the later one, as the reference's ``<=``), and stops the stage once every
    image of the batch is at accuracy 0 (``early_stop``, as the reference)."""

    def __init__(self, y: Tensor, weight: Tensor | None, early_stop: bool):
        self.y, self.weight, self.early_stop = y, weight, early_stop

    def __call__(self, it: Iterate) -> bool:
        pred = it.logits.argmax(1)
        acc = pixel_accuracy(pred, self.y, self.weight)
        if it.step == 0:
            self.x, self.acc, self.pred = it.x, acc, pred
        else:
            lower = acc <= self.acc
            self.x = torch.where(rows(lower), it.x, self.x)
            self.acc = torch.where(lower, acc, self.acc)
            self.pred = torch.where(lower.view(-1, 1, 1), pred, self.pred)
        return self.early_stop and bool((self.acc == 0).all())


class SEA(Attack):
    """SEA (Croce, Singh & Hein, ECCV 2024; the paper's SEA): for each loss of ``losses`` one L-inf APGD
    run with progressive radius reduction, then, per image, the worst case over the runs.

    One run (the reference's ``apgd_largereps``): APGD (Croce & Hein 2020, Alg. 1; see
    :func:`~advmed.attacks.core.apgd_loop.apgd_run`) in stages of growing precision, by default
    30 % of ``steps`` at radius ``2 eps``, 30 % at ``1.5 eps`` and the rest at ``eps``
    (:func:`radius_stages`; 300 steps: 90 / 90 / 120). The first stage starts from
    ``x + 2 eps * U(-1, 1)`` (clipped to [0, 1]), each later one from the previous stage's result
    projected onto its smaller ball; each stage starts APGD afresh (step size ``2 * radius``,
    its own checkpoints). The gradient is that of the run's per-pixel loss
    (:mod:`~advmed.attacks.core.segmentation_losses`: ``"mask-ce-bal"``, ``"mask-ce"``,
    ``"js"``); the step-size rule and the restarts from the best point follow the plain
    cross-entropy (the reference's ``track_loss="ce-avg"``). A stage's result is, per image, its
    iterate with the lowest pixel accuracy; the run's is the last stage's, so within ``eps``.

    Worst case (``select``):

    * ``"pixel_acc"`` (default): per image, the run with the lowest pixel accuracy (ties: the
      earlier loss) — the reference's rule for the average pixel accuracy (aAcc), exact per batch.
    * ``"miou"``: the reference's rule for mIoU, a greedy search over which run to keep per image
      so that the mIoU of the set is lowest (:func:`greedy_miou_choice`), here over the batch:
      the batch-level version of the reference's dataset-level search, so the result depends on
      the batch. For the dataset-level rule run ``SEA(losses=[name])`` per loss (each loss's run
      draws its start from its own generator, seeded ``seed + SEA_LOSSES.index(name)``, so it
      is the same run as inside the ensemble), accumulate
      :func:`~advmed.attacks.core.segmentation_losses.class_overlaps` per image over the split
      and call :func:`greedy_miou_choice` once.

    Pixels outside the call-time ``mask`` (advmed's ignore label: ``mask=y != ignore``, with
    any valid class in the ignored pixels) enter no loss, no accuracy and no IoU.

    ``AttackResult.stats`` (per image, logged as ``test/<name>``): ``pixel_acc_after_<loss>``
    (``-`` written ``_``), the pixel accuracy of that loss's run, and ``worst_pixel_acc``, that of
    the returned image (the mean over images of these per-image figures; the segmentation module
    also logs ``adv_pixel_acc``, the split's pixels pooled); NaN for an image with no pixel in ``mask``.

    Args:
        eps: L-inf budget in [0, 1] (the paper: 4/255, 8/255, 12/255).
        steps: iterations per loss, over all stages (300, the paper's; >= 1).
        losses: the per-pixel losses to run, in order (default all three, the reference's order).
        schedule: ``[[fraction, radius factor], ...]``: the stages (fractions of ``steps``
            summing to 1; the last factor must be 1, so the result is within ``eps``);
            ``[[1.0, 1.0]]``: plain APGD, no radius reduction.
        class_weights: ``"mask-ce-bal"``'s per-class weights (K values, as the reference's
            dataset weights ``VOC_WTS``); None: each image's inverse class frequencies
            (:func:`~advmed.attacks.core.segmentation_losses.balanced_pixel_weights`).
        select: ``"pixel_acc"`` or ``"miou"`` (above).
        rho: APGD's step-size threshold (0.75).
        random_start: start the first stage from a random point (as the reference); False: ``x``.
        early_stop: end a stage once every image of the batch has pixel accuracy 0 (as the
            reference; saves compute on broken models).
        seed: seeds the private generators of the random starts (None: the global RNG).
        amp_dtype, channels_last: see :class:`Attack`.

    SEA is untargeted and defines its own losses: ``targeted``, ``target_class``, ``loss`` and
    ``loss_classes`` are refused. Classification logits are refused (use AutoAttack).

    Differences from the reference: APGD's checkpoints follow the paper (see
    :class:`~advmed.attacks.apgd.APGD`); the per-pixel losses are averaged over the pixels that
    count rather than over all pixels (a constant factor per image, which neither the sign step
    nor the pixel-accuracy selection sees); ignored pixels leave the pixel accuracy instead of
    counting as right (the same order of iterates, the true figure); without ``class_weights``
    the balancing is per image;
    the mIoU selection is per batch and deterministic (above); the gradient of the last
    iteration of a stage is computed (the reference saves that backward pass).
    """

    def __init__(
        self,
        eps: float,
        steps: int = 300,
        losses: Sequence[str] = SEA_LOSSES,
        *,
        schedule: Sequence[Sequence[float]] = SCHEDULE,
        class_weights: Sequence[float] | None = None,
        select: str = "pixel_acc",
        rho: float = 0.75,
        random_start: bool = True,
        early_stop: bool = True,
        seed: int | None = 0,
        amp_dtype: str | torch.dtype | None = None,
        channels_last: bool = False,
        **refused,
    ):
        if refused:
            raise ValueError(
                f"SEA takes no {sorted(refused)}: it is an untargeted ensemble with its own per-pixel losses; "
                "use attack=apgd (or segpgd, cospgd) for a targeted or class-restricted attack"
            )
        super().__init__(eps, amp_dtype=amp_dtype, channels_last=channels_last)
        self.steps = check_count("steps", steps)
        names = [losses] if isinstance(losses, str) else list(losses) if isinstance(losses, Sequence) else None
        if not names or any(n not in SEA_LOSSES for n in names) or len(set(names)) != len(names):
            raise ValueError(f"losses must be distinct names from {list(SEA_LOSSES)}, got {losses!r}")
        self.losses = tuple(names)
        self.schedule = self._check_schedule(schedule)
        self.class_weights = self._check_weights(class_weights)
        if select not in SELECT:
            raise ValueError(f"select must be one of {SELECT}, got {select!r}")
        self.select = select
        self.rho = as_float("rho", rho)
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho:g}")
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.seed = check_seed(seed)

    @staticmethod
    def _check_schedule(schedule: object) -> tuple[tuple[float, float], ...]:
        stages = None
        if isinstance(schedule, Sequence) and not isinstance(schedule, str) and len(schedule) > 0:
            if all(isinstance(s, Sequence) and not isinstance(s, str) and len(s) == 2 for s in schedule):
                stages = tuple((as_float("schedule fraction", f), as_float("schedule factor", r)) for f, r in schedule)
        if (
            stages is None
            or any(f <= 0 or r <= 0 for f, r in stages)
            or abs(sum(f for f, _ in stages) - 1) > 1e-6
            or stages[-1][1] != 1.0
        ):
            raise ValueError(
                "schedule must be [[fraction, radius factor], ...] with fractions > 0 summing to 1, factors > 0 "
                f"and a last factor of 1 (the result stays within eps), e.g. {[list(s) for s in SCHEDULE]}; "
                f"got {schedule!r}"
            )
        return stages

    @staticmethod
    def _check_weights(weights: object) -> tuple[float, ...] | None:
        if weights is None:
            return None
        values = None
        if isinstance(weights, Sequence) and not isinstance(weights, str) and len(weights) > 0:
            values = tuple(as_float("class_weights", w) for w in weights)
        if values is None or min(values) < 0 or max(values) <= 0:
            raise ValueError(f"class_weights must be a list of K weights >= 0, not all 0, or null; got {weights!r}")
        return values

    # ------------------------------------------------------------------ the call

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x, y, weight = batch.x, batch.y, batch.weight
        clean = batch.predict(x)  # checks the logits against y (shapes, K >= 2, label range)
        if clean.ndim != 4:
            raise ValueError(
                f"SEA attacks segmentation models (logits (N, K, H, W), y (N, H, W)), got logits "
                f"{tuple(clean.shape)}; for a classifier use attack=autoattack or attack=apgd"
            )
        k = clean.shape[1]
        if self.class_weights is not None and len(self.class_weights) != k:
            raise ValueError(f"class_weights has {len(self.class_weights)} values but the model has K={k} classes")
        balance = (
            balanced_pixel_weights(y, weight, k, self.class_weights) if "mask-ce-bal" in self.losses else None
        )
        runs = [self._attack(batch, name, balance) for name in self.losses]

        accs = torch.stack([run.acc for run in runs])  # (L, N)
        if self.select == "pixel_acc":
            choice = accs.argmin(0)  # the first of equal minima: the earlier loss
        else:
            overlaps = [class_overlaps(run.pred, y, weight, k) for run in runs]
            choice = greedy_miou_choice(torch.stack([o[0] for o in overlaps]), torch.stack([o[1] for o in overlaps]))
        images = torch.arange(x.shape[0], device=x.device)
        x_adv = torch.stack([run.x for run in runs])[choice, images]

        # No pixel to score: NaN, which the test metrics leave out of the mean (with a warning).
        counted = torch.ones_like(accs[0], dtype=torch.bool) if weight is None else weight.flatten(1).sum(1) > 0
        nan = torch.full_like(accs[0], float("nan"))
        stats = {f"pixel_acc_after_{name.replace('-', '_')}": torch.where(counted, run.acc, nan)
                 for name, run in zip(self.losses, runs)}
        stats["worst_pixel_acc"] = torch.where(counted, accs[choice, images], nan)
        return AttackResult(x_adv, stats=stats)

    def _attack(self, batch: AttackBatch, name: str, balance: Tensor | None) -> _LowestAccuracy:
        """One loss's run: the stages of :func:`radius_stages`, each an APGD run from the last
        stage's result; returns the last stage's observer (its lowest-accuracy iterates)."""
        x, y, weight = batch.x, batch.y, batch.weight
        gen = None
        if self.seed is not None:
            # Per loss, so that SEA(losses=[name]) repeats the ensemble's run of that loss.
            gen = torch.Generator(device=x.device).manual_seed(self.seed + SEA_LOSSES.index(name))

        def loss_fn(logits: Tensor) -> tuple[Tensor, Tensor]:
            # Ascend the SEA loss; the step-size rule tracks the plain CE (reference: track_loss="ce-avg").
            return sea_loss(name, logits, y, weight, balance), cross_entropy(logits, y, weight)

        def evaluate(point: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return loss_and_gradient(batch.model, point, loss_fn, amp_dtype=self.amp_dtype)

        kept: _LowestAccuracy | None = None
        for i, (iterations, factor) in enumerate(radius_stages(self.steps, self.schedule)):
            radius = factor * self.eps
            if i == 0:
                start = self._start(x, radius, gen)
            else:
                start = project(kept.x, x, radius, "linf")
            kept = _LowestAccuracy(y, weight, self.early_stop)
            apgd_run(x, start, evaluate, eps=radius, norm="linf", steps=iterations, rho=self.rho, observe=kept)
        return kept

    def _start(self, x: Tensor, radius: float, gen: torch.Generator | None) -> Tensor:
        """``x + radius * U(-1, 1)`` clipped to [0, 1] (the reference's ``use_rs``), or ``x``."""
        if not self.random_start:
            return x
        # Drawn in the standard layout, so the start does not depend on channels_last.
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device).uniform_(0, 1, generator=gen)
        return torch.add(x, noise.mul_(2).sub_(1), alpha=radius).clamp_(0, 1)
