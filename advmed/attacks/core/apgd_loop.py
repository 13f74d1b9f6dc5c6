"""One APGD run (Croce & Hein, ICML 2020, Algorithm 1) as a loop that the attacks built on it
share: :class:`~advmed.attacks.apgd.APGD` (restarts, targets, trace) and
:class:`~advmed.attacks.ensembles.sea.SEA` (radius stages, per-pixel losses, lowest-accuracy
iterate). What differs between them is passed in: the function that gives the logits, the
tracked loss and the input gradient at a point (``evaluate``, built with :func:`loss_and_gradient`),
and an observer that sees every iterate and keeps what the attack returns.

Written by hand: no maintained library exposes APGD's inner loop (see :mod:`advmed.attacks.apgd`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from advmed.attacks.core.validation import check_steps

# Weight of the new gradient step against the previous move (paper Sec. 3.2: alpha = 0.75).
MOMENTUM = 0.75
# The first step size is 2 * eps (paper Sec. 3.2): large enough to cross the whole ball early on.
INITIAL_STEP = 2.0
# Keeps the normalised directions and the projection's factor finite (the original's 1e-12).
FLOOR = 1e-12


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_1 < w_2 < ... <= steps`` at which APGD checks its step size (Croce &
    Hein 2020, Sec. 3.2): ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``; for 100 steps 22, 41, 57, 70, 80, 87, 93, 99.

    Computed in hundredths: in floats 0.22 + 0.19 is 0.41000000000000003 and its checkpoint
    would be 42, not 41. Equal checkpoints of short runs are merged (an empty interval has
    nothing to judge).
    """
    steps = check_steps(steps)
    out: list[int] = []
    prev, cur = 0, 22
    while cur <= 100:
        w = -(-cur * steps // 100)  # ceil(cur / 100 * steps) in integers
        if not out or w > out[-1]:
            out.append(w)
        prev, cur = cur, cur + max(cur - prev - 3, 6)
    return out


def per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm over (C, H, W), shaped ``(n, 1, 1, 1)``; without flattening, so channels_last
    tensors are not copied."""
    return torch.linalg.vector_norm(t, dim=(1, 2, 3), keepdim=True)


def rows(mask: Tensor) -> Tensor:
    """A per-sample bool ``(n,)`` shaped to broadcast over ``(n, C, H, W)``."""
    return mask.view(-1, 1, 1, 1)


def project(v: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """``v`` projected onto the eps-ball around ``x`` (``"linf"`` or ``"l2"``) and onto [0, 1].

    L-inf: clipping each coordinate to ``[max(x - eps, 0), min(x + eps, 1)]`` is the projection
    onto the intersection. L2: scaled onto the ball, then clipped (as the original: the clip
    only moves coordinates toward ``x``, so the result stays inside the ball).
    """
    if norm == "linf":
        return torch.clamp(v, (x - eps).clamp_(min=0), (x + eps).clamp_(max=1))
    delta = v - x
    factor = (eps / per_sample_norm(delta).clamp_min(FLOOR)).clamp_(max=1)
    return (x + delta * factor).clamp_(0, 1)


def loss_and_gradient(
    model: nn.Module,
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor | tuple[Tensor, Tensor]],
    *,
    amp_dtype: torch.dtype | None = None,
    eot_iter: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, tracked per-sample loss ``(n,)`` and input gradient at ``x``.

    ``loss_fn(logits)`` returns the per-sample objective to differentiate, or a pair
    ``(objective, tracked)`` when the step-size rule follows another loss than the gradient
    (SEA ascends a masked loss and tracks the plain cross-entropy, as the reference).

    Expectation over Transformation (Athalye et al., ICML 2018, Sec. 4): with ``eot_iter > 1``
    the gradient is the mean of ``eot_iter`` forward/backward passes, so that a randomised model
    (noise, random transforms inside ``forward``) is attacked through its expected loss. As the
    reference (``fra31/auto-attack``, ``autopgd_base.py``), the logits and the tracked loss are
    those of the last pass. The passes draw the model's own randomness (the global RNG).

    Input gradient only: autograd skips every parameter gradient and never touches ``.grad``.
    """
    autocast = (
        torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    grad: Tensor | None = None
    for _ in range(eot_iter):
        leaf = x.detach().requires_grad_(True)
        with autocast:
            logits = model(leaf)
        value = loss_fn(logits)
        objective, tracked = value if isinstance(value, tuple) else (value, value)
        (g,) = torch.autograd.grad(objective.sum(), leaf)
        grad = g if grad is None else grad.add_(g)
    if eot_iter > 1:
        grad = grad.div_(eot_iter)
    return logits.detach(), tracked.detach(), grad


class Iterate(NamedTuple):
    """What an observer of :func:`apgd_run` sees after each forward: the point ``x`` (the start,
    then the iterate after each step), its logits and tracked loss ``(n,)``, ``better`` (bool
    ``(n,)``: ``x`` just became the run's highest-loss point) and that highest loss ``best_loss``."""

    step: int
    x: Tensor
    logits: Tensor
    loss: Tensor
    better: Tensor
    best_loss: Tensor


def apgd_run(
    x: Tensor,
    start: Tensor,
    evaluate: Callable[..., tuple[Tensor, Tensor, Tensor]],
    *,
    eps: float,
    norm: str,
    steps: int,
    rho: float,
    observe: Callable[[Iterate], bool | Tensor | None] | None = None,
) -> tuple[Tensor, Tensor]:
    """One APGD run from ``start`` around ``x`` (Algorithm 1); returns the highest-loss point
    and its loss, per sample.

    The step size starts at ``2 * eps`` and is halved, per sample, at the checkpoints
    (:func:`checkpoints`) when (1) the tracked loss rose in fewer than ``rho * (w_j - w_{j-1})``
    steps since the last checkpoint, or (2) the step size was not halved at the last checkpoint
    and the best loss has not grown since; a halved sample restarts from its best point. One
    iteration (paper eq. 3): ``z = P(x_k + eta * s(grad))``,
    ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``, ``alpha = 0.75``
    (``1`` for the first step), ``s`` the sign (L-inf) or the L2-normalised gradient (L2), ``P``
    the projection onto the eps-ball and [0, 1]. Differences from the reference implementation:
    see :class:`~advmed.attacks.apgd.APGD`.

    Args:
        x: the centre of the ball ``(n, C, H, W)``.
        start: the first iterate (inside the ball).
        evaluate: ``x -> (logits, tracked loss (n,), input gradient)``; see :func:`loss_and_gradient`.
            Once samples are done it is called as ``evaluate(x[rows], rows)`` with the indices of the
            samples still running, and must return their values only.
        eps, norm, steps, rho: the radius, ``"linf"`` / ``"l2"``, the iterations, condition 1's threshold.
        observe: called with an :class:`Iterate` after every forward (``step`` 0: the start);
            a true return value ends the run (early stop). A bool tensor ``(n,)`` marks the samples
            that are done (e.g. fooled, where only that counts): they are no longer evaluated (no
            forward or backward pass), keep their loss, so no later iterate replaces their best
            point, and the run ends when every sample is done.
    """
    if norm == "linf":
        # Clipping to [max(x - eps, 0), min(x + eps, 1)] is the projection onto ball and box.
        lo, hi = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)
    x_cur = start
    logits, loss, grad = evaluate(x_cur)
    x_max, f_max, g_max = x_cur, loss, grad
    first = Iterate(0, x_cur, logits, loss, torch.ones_like(loss, dtype=torch.bool), f_max)
    running, finished = _still_running(None if observe is None else observe(first))  # running: None = all samples
    if finished:
        return x_max, f_max
    step = torch.full((x.shape[0], 1, 1, 1), INITIAL_STEP * eps, dtype=x.dtype, device=x.device)

    x_prev, prev_loss = x_cur, loss
    rises = torch.zeros_like(loss)  # steps since the last checkpoint where the loss rose (condition 1)
    halved_last = torch.zeros_like(loss, dtype=torch.bool)  # halved at the last checkpoint (condition 2)
    best_last = f_max  # best loss at the last checkpoint (condition 2)
    marks, last_mark = set(checkpoints(steps)), 0
    for k in range(steps):
        # The first step is a plain projected step (alpha = 1; x_prev = x_cur makes the momentum 0).
        alpha = MOMENTUM if k > 0 else 1.0
        if norm == "linf":
            z = torch.clamp(x_cur + step * grad.sign(), lo, hi)
            x_new = torch.clamp(x_cur + (z - x_cur) * alpha + (x_cur - x_prev) * (1 - alpha), lo, hi)
        else:
            z = project(x_cur + step * grad / (per_sample_norm(grad) + FLOOR), x, eps, norm)
            x_new = project(x_cur + (z - x_cur) * alpha + (x_cur - x_prev) * (1 - alpha), x, eps, norm)
        x_prev, x_cur = x_cur, x_new
        if running is None:
            logits, loss, grad = evaluate(x_cur)
        else:  # the done samples keep their last values: loss unchanged, so neither a rise nor a new best
            sub_logits, sub_loss, sub_grad = evaluate(x_cur[running], running)
            logits = logits.index_copy(0, running, sub_logits)
            loss = loss.index_copy(0, running, sub_loss)
            grad = grad.index_copy(0, running, sub_grad)

        rises += loss > prev_loss
        prev_loss = loss
        better = loss > f_max
        x_max = torch.where(rows(better), x_cur, x_max)
        g_max = torch.where(rows(better), grad, g_max)
        f_max = torch.where(better, loss, f_max)
        if observe is not None:
            running, finished = _still_running(observe(Iterate(k + 1, x_cur, logits, loss, better, f_max)))
            if finished:
                break

        if k + 1 in marks:
            oscillating = rises < rho * (k + 1 - last_mark)
            stalled = ~halved_last & (f_max <= best_last)
            halve = oscillating | stalled
            step = torch.where(rows(halve), step / 2, step)
            # Restart the halved samples from their best point (its gradient is kept: no extra pass).
            x_cur = torch.where(rows(halve), x_max, x_cur)
            grad = torch.where(rows(halve), g_max, grad)
            prev_loss = torch.where(halve, f_max, prev_loss)
            halved_last, best_last, last_mark = halve, f_max, k + 1
            rises = torch.zeros_like(rises)
    return x_max, f_max


def _still_running(verdict: bool | Tensor | None) -> tuple[Tensor | None, bool]:
    """An observer's verdict as (indices of the samples still running or None for all, run over)."""
    if not isinstance(verdict, Tensor):
        return None, bool(verdict)
    done = int(verdict.sum())  # one host sync per iteration, not two
    if done == verdict.numel():
        return None, True
    return (None if done == 0 else (~verdict).nonzero().squeeze(1)), False
