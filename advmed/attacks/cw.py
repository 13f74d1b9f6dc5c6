"""Carlini & Wagner's L2 attack (C&W L2): the smallest L2 perturbation that fools a classifier,
found by Adam in tanh space with a binary search over the trade-off constant, reported only when
it falls inside the budget ``eps``.

Written by hand: no maintained library offers it as an advmed attack (model given at call time,
per-sample constants, a budget). ``torchattacks.CW`` runs one constant without a search and no
budget, freezes pixels at exactly 0 or 1 (its ``atanh(2x - 1)`` is infinite there, the tanh
gradient 0: a black background can never change) and reads 0 instead of a logit when the
logits are negative (its ``max((1 - onehot) * Z)``); ART's ``CarliniL2Method`` replaces Adam by a
line search. The original (carlini/nn_robust_attacks, ``l2_attack.py``) and ``torchattacks.CW``
were read for the defaults; see :class:`CW`, "Differences".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.losses import AttackObjective
from advmed.attacks.core.margin_losses import margin_loss
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.validation import as_float, check_count, check_steps, looks_like_probabilities

log = logging.getLogger(__name__)

# Adam's moment decays and floor (Kingma & Ba 2015; the original's TensorFlow defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# Each failed run without any success so far multiplies the constant by 10 (the original's search).
C_GROWTH = 10.0
# Abort early when the loss fell by less than this fraction since the last check (the original's .9999).
ABORT_TOLERANCE = 1e-4
# atanh(+-1) is infinite: pixels at exactly 0 or 1 are first pulled in by this fraction of the range
# (the original's 1.999999), at least one unit of the dtype's precision (1 - 1e-6 rounds to 1 in fp16).
_SHRINK = 1e-6


def to_tanh_space(x: Tensor) -> Tensor:
    """``w`` with ``(tanh(w) + 1) / 2 ~= x`` (paper Sec. V.B, change of variables), finite for every
    ``x`` in [0, 1]: ``2x - 1`` is scaled by ``1 - 1e-6`` before ``atanh``, so a pixel at exactly 0
    or 1 comes back (:func:`from_tanh_space`) off by ``5e-7`` (plus float rounding) instead of
    ``w`` being infinite; any other pixel by less."""
    shrink = 1 - max(_SHRINK, torch.finfo(x.dtype).eps)
    return torch.atanh((2 * x - 1) * shrink)


def from_tanh_space(w: Tensor) -> Tensor:
    """``(tanh(w) + 1) / 2``: every real ``w`` gives a pixel in [0, 1] (the box constraint)."""
    return (torch.tanh(w) + 1) / 2


def cw_gain(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """How far the attack's goal leads, per sample: untargeted ``max_{i != y} Z_i - Z_y``, targeted
    ``Z_t - max_{i != t} Z_i``. Positive: the prediction is adversarial."""
    wrong_lead = margin_loss(logits, labels)
    return -wrong_lead if targeted else wrong_lead


def cw_loss(logits: Tensor, labels: Tensor, kappa: float, targeted: bool) -> Tensor:
    """Carlini & Wagner's ``f`` (paper Sec. V.A, ``f_6``, with the confidence of Sec. VI.A), per
    sample: untargeted ``max(Z_y - max_{i != y} Z_i, -kappa)``, targeted
    ``max(max_{i != t} Z_i - Z_t, -kappa)``, ``Z`` the logits. It bottoms out at ``-kappa`` once
    the goal leads by ``kappa``: beyond that only the distance is minimised."""
    return (-cw_gain(logits, labels, targeted)).clamp(min=-kappa)


class CWObjective(AttackObjective):
    """``-f`` per sample (:func:`cw_loss`), the quantity the shared gradient helper ascends, times
    the per-sample weight of the call's ``mask`` / ``loss_classes`` (0 leaves a sample at ``x``)."""

    def __init__(self, kappa: float, *, targeted: bool = False, loss_classes: Sequence[int] | None = None):
        super().__init__("ce", targeted=targeted, loss_classes=loss_classes)
        self.kappa = kappa

    def __call__(self, logits: Tensor, labels: Tensor, weight: Tensor | None, step: int = 0) -> Tensor:
        value = -cw_loss(logits, labels, self.kappa, self.targeted)
        return value if weight is None else value * weight


def _rows(t: Tensor) -> Tensor:
    """A per-sample ``(n,)`` tensor shaped to broadcast over ``(n, C, H, W)``."""
    return t.view(-1, 1, 1, 1)


def _take(t: Tensor | None, idx: Tensor | None) -> Tensor | None:
    """The rows ``idx`` of ``t`` (all of it when ``idx`` is None; None stays None)."""
    return t if t is None or idx is None else t[idx]


class CW(Attack):
    """Carlini & Wagner's L2 attack (Carlini & Wagner, IEEE S&P 2017, "Towards evaluating the
    robustness of neural networks", Sec. VI.A), for classifiers: per sample, minimise

        ``||x' - x||_2^2 + c * f(x')``,  ``x' = (tanh(w) + 1) / 2``

    over ``w`` with Adam (``f``: :func:`cw_loss`, paper Sec. V.A's ``f_6``; the tanh change of
    variables of Sec. V.B keeps ``x'`` in [0, 1] without clipping). ``steps`` Adam steps from
    ``x`` make one run; after each run the constant ``c`` of each sample is adjusted by a binary
    search (the paper chooses c by binary search; the rule is the original ``l2_attack.py``'s): a
    run that found an adversarial makes ``c`` an upper bound, one that did not a lower bound; the
    next ``c`` is the midpoint of the bounds, or ten times ``c`` while no run has succeeded. Every iterate counts:
    the smallest-norm adversarial one over all runs is kept.

    A minimum-norm attack under a budget: the result is that smallest adversarial ``x'`` when
    ``||x' - x||_2 <= eps``, else ``x`` itself (the sample counts as robust at ``eps``). An
    iterate is adversarial when the goal leads by at least ``kappa`` (untargeted: a wrong class
    beats ``y``; targeted: the target beats every other class; with ``kappa = 0``, strictly).

    ``AttackResult.stats`` (:meth:`run`), per sample, all finite:

    * ``found``: 1.0 where some iterate was adversarial, at any distance, else 0.0;
    * ``l2_found``: the L2 norm of the smallest adversarial iterate, 0.0 where none was found
      (the mean over the found samples is ``mean(l2_found) / mean(found)``); beyond ``eps`` it
      tells how far the nearest adversarial found lies, so one run gives the robust accuracy
      at every smaller radius too;
    * ``c``: the constant of the last run.

    Classification logits ``(N, K)`` only: segmentation logits are refused with a clear error
    (use PGD-L2, APGD, SegPGD or CosPGD with ``norm="L2"``). Samples already adversarial at
    ``x`` are returned as they are (distance 0, nothing can beat it) and sit out every run, as
    do those the call-time ``mask`` / ``loss_classes`` leave out.

    What Adam in tanh space can and cannot resolve (the original's behaviour, measured in
    tests/attacks/test_cw.py):

    * Adam's first step moves every coordinate of ``w`` by about ``lr``, an L2 step of about
      ``lr / 2 * sqrt(C * H * W)`` in pixels (0.064 for 3x8x8 at lr = 0.01). A sample closer
      to the boundary than that is found at about that distance whatever ``c``; a smaller
      ``lr`` (and more ``steps``) resolves it.
    * A pixel at exactly 0 or 1 starts at ``w = -+7.25``, where tanh is flat; ``x'`` grows
      there like ``exp(2 w)``, so at about ``lr`` per step it takes ~500 steps at lr = 0.01 to
      reach 0.01 from 0. With the default 100 steps a black background barely moves; on
      images whose saturated pixels matter raise ``steps`` (the original allows 10000) or ``lr``.

    Args:
        eps: L2 radius per sample in [0, 1]-pixel units over (C, H, W), any value >= 0.
        c: the first constant of every sample (the original's ``INITIAL_CONST = 1e-3``), > 0.
        kappa: confidence: how far the goal must lead (the original's ``CONFIDENCE = 0``), >= 0.
        steps: Adam steps per run (the original: up to 10000; see conf/attack/cw.yaml).
        lr: Adam's learning rate on ``w`` (the original's 1e-2), > 0.
        binary_search_steps: runs, i.e. constants tried per sample (the original's 9).
        abort_early: end a sample's run when its loss fell by less than 0.01 % since the last
            check, every ``max(steps // 10, 1)`` steps (the original's rule).
        Other keyword args (targeted, target_class, loss_classes, amp_dtype, channels_last):
            see :class:`Attack`. ``loss`` must stay ``"ce"``: CW minimises its own ``f``.
            ``loss_classes`` and the call-time ``mask`` pick the samples that are attacked.

    Differences from the original ``l2_attack.py`` (``torchattacks.CW`` is one run of it with
    a given ``c``: no search, no budget, a batch-wide early stop):

    * ``x`` maps to ``w`` with ``2x - 1`` scaled by ``1 - 1e-6`` (the original's ``1.999999``
      on its [-0.5, 0.5] images), so a pixel at exact 0 or 1 is off by at most ``5e-7`` in the
      iterates; the distance is measured to ``x`` itself, not to the shrunk image;
    * ``f`` is the paper's ``max(., -kappa)``; the original's ``max(0, . + kappa)`` differs by
      the constant ``kappa`` (same minimiser), and its early stop is judged on the latter;
    * with ``kappa > 0``, an untargeted iterate succeeds when a wrong class beats ``y`` by
      ``kappa`` (the paper's confidence); the original subtracts ``kappa`` from ``Z_y`` before
      its argmax test, which asks less than a plain misclassification;
    * the early stop, the binary search and the bookkeeping are per sample (as the original's
      default batch of one image) in one batched loop; a sample whose run stopped leaves the
      batch until the next run. A loss stuck at 0 counts as stalled (``>=`` where the original
      has ``>``), and the iterate read at a check is kept when it is the best;
    * the original's extra run at the upper bound when ``binary_search_steps >= 10`` is not done.
    """

    norm = "l2"
    _eps_upper = None

    def __init__(
        self,
        eps: float,
        c: float = 1e-3,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        binary_search_steps: int = 9,
        *,
        abort_early: bool = True,
        **common,
    ):
        super().__init__(eps, **common)
        if self.loss != "ce":
            raise ValueError(
                "CW minimises its own margin loss f (Carlini & Wagner 2017, Sec. V.A): "
                f"loss must stay 'ce', got {self.loss!r}"
            )
        self.c = as_float("c", c)
        if self.c <= 0:
            raise ValueError(f"c must be > 0 (the first trade-off constant, e.g. 1e-3), got {self.c:g}")
        self.kappa = as_float("kappa", kappa)
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0 (how far the goal must lead in logits), got {self.kappa:g}")
        self.steps = check_steps(steps)
        self.lr = as_float("lr", lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0 (Adam's learning rate on w), got {self.lr:g}")
        self.binary_search_steps = check_count("binary_search_steps", binary_search_steps)
        self.abort_early = bool(abort_early)
        self.objective = CWObjective(self.kappa, targeted=self.targeted, loss_classes=self.loss_classes)
        self._warned: set[str] = set()  # each warning once per attack, not once per batch

    # ------------------------------------------------------------------ the call

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        clean = batch.predict(x)  # also checks the logits against the labels
        self._check_output(clean)
        n = x.shape[0]
        w0 = to_tanh_space(x)
        # The search's state in at least float32 (1e-3 * 10^8 overflows fp16).
        state = {"dtype": torch.promote_types(x.dtype, torch.float32), "device": x.device}
        c = torch.full((n,), self.c, **state)
        lower, upper = torch.zeros(n, **state), torch.full((n,), math.inf, **state)
        # Squared L2 of the best adversarial so far; 0 where x itself is one (nothing can beat it).
        clean_gain = cw_gain(clean, batch.ref, self.targeted)
        best_sq = torch.where((clean_gain > 0) & (clean_gain >= self.kappa), 0.0, math.inf).to(**state)
        best_x = x.clone()
        for _ in range(self.binary_search_steps):
            found = self._run(batch, w0, c, best_sq, best_x)
            c_used = c
            # l2_attack.py: success -> c is an upper bound; failure -> a lower bound. The next c is
            # the midpoint once an upper bound is known, else ten times c.
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(upper.isfinite(), (lower + upper) / 2, c * C_GROWTH)
        l2 = best_sq.sqrt()
        broken = l2 <= self.eps  # inf (nothing found) is never inside
        x_adv = torch.where(_rows(broken), best_x, x)
        found = best_sq.isfinite()
        stats = {
            "found": found.float(),
            "l2_found": torch.where(found, l2, 0.0).float(),
            "c": c_used.float(),
        }
        return AttackResult(x_adv, stats=stats)

    def _check_output(self, clean: Tensor) -> None:
        if clean.ndim != 2:
            raise ValueError(
                f"CW is defined on classification logits (N, K), got {tuple(clean.shape)}: its margin f "
                "compares whole-image logits. For segmentation under an L2 budget use PGDL2, APGD "
                "(norm=L2), SegPGD or CosPGD (norm=L2)"
            )
        if looks_like_probabilities(clean) and "probabilities" not in self._warned:
            self._warned.add("probabilities")
            log.warning(
                "CW: the model's outputs look like probabilities (every row in [0, 1], summing to 1); "
                "CW's margin f needs the logits Z (Carlini & Wagner 2017, Sec. V.A): drop the final softmax"
            )

    # ------------------------------------------------------------------ one run (one constant)

    def _run(self, batch: AttackBatch, w0: Tensor, c: Tensor, best_sq: Tensor, best_x: Tensor) -> Tensor:
        """One run of ``steps`` Adam steps with the constants ``c``, from ``x``; updates
        ``best_sq`` / ``best_x`` in place and returns, per sample, whether any iterate was adversarial."""
        x = batch.x
        n = x.shape[0]
        w = w0.clone()
        m, v = torch.zeros_like(w), torch.zeros_like(w)  # Adam's moments, reset for every run
        # Adversarial at x already: found at distance 0 in every run. Weight 0: not attacked.
        found = best_sq == 0
        sit_out = found if batch.weight is None else found | (batch.weight == 0)
        prev = torch.full_like(c, math.inf)  # the loss at the last early-stop check
        check_every = max(self.steps // 10, 1)
        beta1, beta2 = ADAM_BETAS
        # The samples still running; None = all (no gathers).
        idx = torch.arange(n, device=x.device)[~sit_out] if bool(sit_out.any()) else None
        if idx is not None and idx.numel() == 0:
            return found
        for i in range(self.steps):
            w_i, x_i, c_i = _take(w, idx), _take(x, idx), _take(c, idx)
            t = torch.tanh(w_i)
            x_cur = (t + 1) / 2  # from_tanh_space, keeping tanh(w) for the chain rule below
            # g: the input gradient of -f (times the sample weight), the objective the helper ascends.
            logits, g = batch.gradient(x_cur, idx, step=i)
            delta = x_cur - x_i
            dist = delta.square().sum(dim=(1, 2, 3), dtype=c.dtype)
            ref = _take(batch.ref, idx)
            gain = cw_gain(logits, ref, self.targeted)
            success = (gain > 0) & (gain >= self.kappa)
            better = success & (dist < _take(best_sq, idx))
            if idx is None:
                found |= success
                best_sq.copy_(torch.where(better, dist, best_sq))
                best_x.copy_(torch.where(_rows(better), x_cur, best_x))
            else:
                found[idx] = found[idx] | success
                best_sq[idx] = torch.where(better, dist, best_sq[idx])
                best_x[idx] = torch.where(_rows(better), x_cur, best_x[idx])

            # d/dw [||x' - x||^2 + c f] = (2 (x' - x) + c df/dx') * dx'/dw, dx'/dw = (1 - tanh^2 w) / 2.
            grad = (2 * delta - _rows(c_i).to(g.dtype) * g) * (1 - t * t) / 2
            m_i, v_i = _take(m, idx), _take(v, idx)
            m_i = m_i.mul(beta1).add_(grad, alpha=1 - beta1)
            v_i = v_i.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            # torch.optim.Adam's update (bias-corrected moments), per coordinate.
            denom = (v_i / (1 - beta2 ** (i + 1))).sqrt_().add_(ADAM_EPS)
            w_i = w_i.addcdiv(m_i, denom, value=-self.lr / (1 - beta1 ** (i + 1)))
            if idx is None:
                w, m, v = w_i, m_i, v_i
            else:
                w.index_copy_(0, idx, w_i)
                m.index_copy_(0, idx, m_i)
                v.index_copy_(0, idx, v_i)

            if self.abort_early and i % check_every == 0:
                # The original's nonnegative loss: f + kappa = max(0, . + kappa).
                f = -self.objective(logits, ref, _take(batch.weight, idx))
                loss = dist + c_i * (f.to(c.dtype) + self.kappa)
                # >=, not the original's >: a loss stuck at 0 has stalled too.
                stalled = loss >= (1 - ABORT_TOLERANCE) * _take(prev, idx)
                if idx is None:
                    prev = loss
                else:
                    prev[idx] = loss
                if bool(stalled.any()):
                    everyone = torch.arange(n, device=x.device) if idx is None else idx
                    idx = everyone[~stalled]
                    if idx.numel() == 0:
                        break
        return found
