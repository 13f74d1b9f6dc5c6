"""The Square attack: a score-based black-box attack by random search, under an L-inf or an L2 budget.

Written by hand: no maintained library offers Square as an advmed attack (model given at call
time, the shared eval-mode / autocast / channels_last contract, per-sample early stopping and
query counts). The reference implementation (fra31/auto-attack, ``square.py``), the authors'
original code (max-andr/square-attack, ``attack.py``) and ``torchattacks.Square`` were read for
the defaults and the schedule; where they differ, see :class:`Square`, "Differences".
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.margin_losses import margin_loss, targeted_ce_loss
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.validation import as_float, check_count, check_seed, looks_like_probabilities

log = logging.getLogger(__name__)

NORMS = ("linf", "l2")
LOSSES = ("margin", "ce")
# p is halved each time the rescaled query index passes one of these (paper Sec. 3 / the reference).
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# Keeps the L2 normalisations finite (the reference's 1e-12).
_FLOOR = 1e-12


def p_schedule(i: int, n_queries: int, p_init: float = 0.8) -> float:
    """Fraction of the pixels the ``i``-th square covers (``i`` = 0 for the first query after the
    initialisation): ``p_init`` halved at the query indices 10, 50, 200, 500, 1000, 2000, 4000,
    6000 and 8000 of a 10000-query budget (Andriushchenko et al. 2020, Sec. 3 / the reference's
    ``p_selection``), rescaled to ``n_queries`` as the reference does: the index compared with
    those is ``int(i / n_queries * 10000)``, here in integers (it equals the float form for every
    budget up to 3000 and for 5000, 10000, 100000)."""
    rescaled = i * 10000 // n_queries
    return p_init / 2 ** sum(rescaled > b for b in P_HALVINGS)


def _rectangles(rows: int, cols: int) -> Tensor:
    """Concentric rectangles around ``(rows // 2, cols // 2)``, the ``k``-th (0-based) adding
    ``1 / (k + 1)^2`` (the paper's sum up to ``M(r, s)``, Sec. 3, Alg. 3), scaled to unit L2
    norm. In closed form: a cell at Chebyshev distance ``d`` from the centre holds
    ``sum_{k >= d} 1/(k+1)^2``."""
    k = torch.arange(1, max(rows // 2, cols // 2) + 2, dtype=torch.float64)
    tail = (1 / k**2).flip(0).cumsum(0).flip(0)
    dr = (torch.arange(rows) - rows // 2).abs()
    dc = (torch.arange(cols) - cols // 2).abs()
    v = tail[torch.maximum(dr[:, None], dc[None, :])]
    return v / v.norm() if v.numel() else v


def square_bump(s: int) -> Tensor:
    """The L2 attack's ``s x s`` update shape ``eta^{(s)}`` (paper Sec. 3, Alg. 3): rectangles
    of one sign in the top half, of the other in the bottom half, unit L2 norm (float64)."""
    eta = torch.cat([_rectangles(s // 2, s), -_rectangles(s - s // 2, s)])
    return eta / eta.norm()


def _rows(mask: Tensor) -> Tensor:
    return mask.view(-1, 1, 1, 1)


def _norm(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t, dim=(1, 2, 3), keepdim=True)


def _window(top: Tensor, left: Tensor, s: int, h: int, w: int) -> Tensor:
    """Bool ``(m, 1, h, w)``: each sample's ``s x s`` square at ``(top, left)``."""
    r, c = torch.arange(h, device=top.device), torch.arange(w, device=top.device)
    in_r = (r >= top[:, None]) & (r < top[:, None] + s)
    in_c = (c >= left[:, None]) & (c < left[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)


def _place(patch: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Each sample's ``(s, s)`` patch ``(m, s, s)`` at ``(top, left)`` of a zero ``(m, 1, h, w)`` image
    (gathers instead of a per-sample loop of slice assignments)."""
    m, s = patch.shape[0], patch.shape[-1]
    r = (torch.arange(h, device=top.device) - top[:, None]).clamp(0, s - 1)
    c = (torch.arange(w, device=top.device) - left[:, None]).clamp(0, s - 1)
    out = patch.gather(1, r[:, :, None].expand(m, h, s)).gather(2, c[:, None, :].expand(m, h, w))
    return out.unsqueeze(1) * _window(top, left, s, h, w)


class Square(Attack):
    """Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, "Square Attack: a
    query-efficient black-box adversarial attack via random search", Algorithm 1): random search
    over localised square-shaped updates, using the model's outputs only (no gradients; the
    forwards run under ``torch.no_grad()``). AutoAttack runs it to expose gradient masking.

    Per sample: start from ``x_hat`` (L-inf: vertical stripes ``x + eps * sign``, one sign per
    column and channel; L2: a centred grid of ``eta`` bumps with random signs per channel,
    scaled to norm eps; both as in the paper's Sec. 3 and the reference), then at each query
    ``i`` propose a change of one random square of side ``s = round(sqrt(p_i * H * W))``
    (:func:`p_schedule`) and keep it when the loss improves or the model is fooled. L-inf
    (Alg. 2): the square's perturbation becomes ``+-eps`` per channel. L2 (Alg. 3): the square
    gets ``eta^{(s)}`` (:func:`square_bump`) with a random sign per channel plus its old content,
    carrying the mass of a second random square, which is zeroed, and the free budget; the whole
    perturbation is then rescaled to norm eps. Both are clipped to [0, 1].

    Losses (minimised by the reference; here the house convention, ascended): untargeted
    ``"margin"`` ``max_{i != y} z_i - z_y`` (the default) or ``"ce"`` ``CE(z, y)``; targeted
    ``"ce"`` ``-CE(z, t)`` (what the reference uses for targeted Square whatever its ``loss``; the
    default when ``targeted``) or ``"margin"`` ``z_t - max_{i != t} z_i`` (torchattacks' targeted margin).

    Only samples not yet fooled are queried: a sample stops once fooled (misclassified, or
    predicted as its target), the call once all are; samples fooled on the clean input, or left
    out by ``mask`` / ``loss_classes``, are not attacked. Each restart starts afresh on the samples
    still robust. The result holds a fooled point for fooled samples, else the best point seen
    (the clean input included). ``AttackResult.stats["queries"]`` (float, per sample) counts the
    model queries spent on it, the initialisation included, up to the one that fooled it: 0 for
    samples not attacked, ``n_restarts * n_queries`` for those never fooled.

    Args:
        eps: budget; L-inf: in [0, 1]; L2: a radius >= 0 in [0, 1]-pixel units over (C, H, W).
        norm: ``"Linf"`` or ``"L2"`` (case-insensitive; stored as ``"linf"`` / ``"l2"``).
        n_queries: queries per sample per restart, the initialisation included (5000 as in AutoAttack).
        n_restarts: runs, each on the samples not yet fooled.
        p_init: in (0, 1]; the fraction of the pixels the first squares cover (0.8 as in AutoAttack).
        loss: ``"margin"`` or ``"ce"`` (above); None: ``"margin"`` untargeted, ``"ce"`` targeted.
        seed: seeds a private generator, so a call neither depends on nor advances the global RNG
            (0 as the reference: a rerun gives the same figure); None: the global RNG.
        Other keyword args (targeted, target_class, loss_classes, amp_dtype, channels_last):
            see :class:`Attack`. Classification logits ``(N, K)`` only.

    Differences from the reference (fra31/auto-attack) and ``torchattacks.Square`` (a copy of it):

    * the budget counts the initialisation, as the paper's Alg. 1 and the authors' L-inf code
      (``n_queries - 1`` updates); the reference makes ``n_queries`` updates after it;
    * each sample draws its own square positions, signs and bump orientation (the paper, and the
      authors' L-inf code, which loops over the samples; here vectorised); the reference uses one
      square and one sign per channel for the whole batch at each query;
    * positions are uniform over all ``H - s + 1`` places (the reference's ``int(U * (H - s))``
      never puts a square against the last row or column), and ``s`` is capped at ``min(H, W)``;
    * the L2 start tiles whole squares of side ``max(min(H, W) // 5, 1)``, centred; the
      reference's ``5 x 5`` grid of side ``H // 5`` fails below 5 px and when ``H // (H // 5) > 5``
      (e.g. H = 12, 14);
    * fooled means the prediction (argmax) is wrong / the target, as in the reference's final
      check; its search stops on ``margin <= 0``, which counts ties;
    * a sample never fooled gets its best point (the reference returns ``x``); the authors'
      L-inf code redraws the signs of a square that would change nothing, the reference and this
      do not.
    """

    def __init__(
        self,
        eps: float,
        norm: str = "Linf",
        n_queries: int = 5000,
        n_restarts: int = 1,
        *,
        p_init: float = 0.8,
        loss: str | None = None,
        seed: int | None = 0,
        **common,
    ):
        norm_name = str(norm).lower()
        if norm_name not in NORMS:
            raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
        if loss is not None and loss not in LOSSES:
            raise ValueError(
                f"loss must be one of {LOSSES} or null (margin, or ce when targeted), got {loss!r}"
            )
        # Set before the base checks eps: L-inf in [0, 1], L2 any radius >= 0.
        self.norm = norm_name
        self._eps_upper = None if norm_name == "l2" else 1.0
        # The shared objective only supplies the pixel weights of mask / loss_classes.
        super().__init__(eps, loss="ce", **common)
        self.loss = loss if loss is not None else ("ce" if self.targeted else "margin")
        self.n_queries = check_count("n_queries", n_queries)
        self.n_restarts = check_count("n_restarts", n_restarts)
        self.p_init = as_float("p_init", p_init)
        if not 0 < self.p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1] (a fraction of the pixels), got {self.p_init:g}")
        self.seed = check_seed(seed)
        self._warned = False  # the probabilities warning, once per attack rather than once per batch

    # ------------------------------------------------------------------ the call

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        clean = self._query(batch, x)  # also checks the logits against the labels
        if clean.ndim != 2:
            raise ValueError(
                f"Square is defined on classification logits (N, K), got {tuple(clean.shape)}; "
                "for segmentation use SegPGD, CosPGD or APGD (loss='ce' or 'dice')"
            )
        if looks_like_probabilities(clean) and not self._warned:
            self._warned = True
            log.warning(
                "Square: the model's outputs look like probabilities (every row in [0, 1], summing to 1); "
                "its margin and cross-entropy losses are meant for logits: drop the final softmax"
            )
        gen = torch.Generator(device=x.device).manual_seed(self.seed) if self.seed is not None else None
        fooled = self._fooled(clean, batch.ref)
        todo = ~fooled if batch.weight is None else ~fooled & (batch.weight > 0)
        x_out, best = x.clone(), self._loss(clean, batch.y, batch.ref)
        queries = torch.zeros(x.shape[0], device=x.device)
        everyone = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.n_restarts):
            idx = everyone[todo]
            if idx.numel() == 0:
                break
            x_run, loss, run_fooled, used = self._run(batch, idx, gen)
            take = run_fooled | (loss > best[idx])
            x_out.index_copy_(0, idx, torch.where(_rows(take), x_run, x_out[idx]))
            best[idx] = torch.where(take, loss, best[idx])
            queries[idx] += used
            todo[idx] = ~run_fooled
        return AttackResult(x_out, stats={"queries": queries})

    def _query(self, batch: AttackBatch, x: Tensor) -> Tensor:
        """One query: the model's logits at ``x`` (no graph; autocast as configured)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return batch.predict(x)

    def _loss(self, logits: Tensor, y: Tensor, ref: Tensor) -> Tensor:
        """The per-sample loss to ascend (see the class docstring); ``ref`` is ``y`` or the target."""
        if self.loss == "margin":
            return -margin_loss(logits, ref) if self.targeted else margin_loss(logits, y)
        if self.targeted:
            return targeted_ce_loss(logits, ref)
        return F.cross_entropy(logits.float(), y, reduction="none")

    def _fooled(self, logits: Tensor, ref: Tensor) -> Tensor:
        pred = logits.argmax(1)
        return pred == ref if self.targeted else pred != ref

    # ------------------------------------------------------------------ one run (Algorithm 1)

    def _run(
        self, batch: AttackBatch, idx: Tensor, gen: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One run on the samples ``idx``: (best point, its loss, fooled, queries used), per sample."""
        x, y, ref = batch.x[idx], batch.y[idx], batch.ref[idx]
        x_best = self._start(x, gen)
        logits = self._query(batch, x_best)
        best, fooled = self._loss(logits, y, ref), self._fooled(logits, ref)
        used = torch.ones(x.shape[0], device=x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        propose = self._propose_linf if self.norm == "linf" else self._propose_l2
        for i in range(self.n_queries - 1):
            act = rows[~fooled]
            if act.numel() == 0:
                break
            x_act, best_act = x[act], x_best[act]
            x_new = propose(x_act, best_act, p_schedule(i, self.n_queries, self.p_init), gen)
            logits = self._query(batch, x_new)
            loss, now = self._loss(logits, y[act], ref[act]), self._fooled(logits, ref[act])
            # As the reference: keep an improvement, and any fooling point even if it is not one.
            keep = now | (loss > best[act])
            x_best.index_copy_(0, act, torch.where(_rows(keep), x_new, best_act))
            best[act] = torch.where(keep, loss, best[act])
            fooled[act] = now
            used[act] += 1
        return x_best, best, fooled, used

    def _signs(self, shape: tuple[int, ...], x: Tensor, gen: torch.Generator | None) -> Tensor:
        return torch.randint(0, 2, shape, generator=gen, device=x.device).to(x.dtype).mul_(2).sub_(1)

    def _positions(self, m: int, s: int, size: int, x: Tensor, gen: torch.Generator | None) -> Tensor:
        return torch.randint(0, size - s + 1, (m,), generator=gen, device=x.device)

    def _bumps(self, s: int, shape: tuple[int, ...], x: Tensor, gen: torch.Generator | None) -> Tensor:
        """``eta^{(s)}`` per entry of ``shape``, transposed with probability 1/2 (as the reference)."""
        eta = square_bump(s).to(device=x.device, dtype=x.dtype)
        flip = torch.randint(0, 2, shape, generator=gen, device=x.device).bool()
        return torch.where(flip[..., None, None], eta.T, eta)

    def _start(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """The initial point ``x_hat`` (vertical stripes / a grid of bumps), in the budget and in [0, 1]."""
        n, c, h, w = x.shape
        if self.norm == "linf":
            return (x + self.eps * self._signs((n, c, 1, w), x, gen)).clamp(0, 1)
        s = max(min(h, w) // 5, 1)
        nh, nw = h // s, w // s
        tiles = self._bumps(s, (n, 1, nh, nw), x, gen) * self._signs((n, c, nh, nw), x, gen)[..., None, None]
        grid = tiles.permute(0, 1, 2, 4, 3, 5).reshape(n, c, nh * s, nw * s)
        top, left = (h - nh * s) // 2, (w - nw * s) // 2
        delta = F.pad(grid, (left, w - nw * s - left, top, h - nh * s - top))
        return (x + self.eps * delta / (_norm(delta) + _FLOOR)).clamp(0, 1)

    def _side(self, p: float, h: int, w: int) -> int:
        """The square's side for the fraction ``p`` (L2: >= 3 and odd, as the reference), <= min(H, W)."""
        s = int(round(math.sqrt(p * h * w)))
        if self.norm == "l2":
            s = max(s, 3)
            s += 1 - s % 2
        return min(max(s, 1), h, w)

    def _propose_linf(self, x: Tensor, x_best: Tensor, p: float, gen: torch.Generator | None) -> Tensor:
        """Alg. 2: one square per sample set to ``x +- eps`` (one sign per channel)."""
        m, c, h, w = x.shape
        s = self._side(p, h, w)
        win = _window(self._positions(m, s, h, x, gen), self._positions(m, s, w, x, gen), s, h, w)
        return torch.where(win, (x + self.eps * self._signs((m, c, 1, 1), x, gen)).clamp(0, 1), x_best)

    def _propose_l2(self, x: Tensor, x_best: Tensor, p: float, gen: torch.Generator | None) -> Tensor:
        """Alg. 3: square 1 gets a bump plus its old (per-channel normalised) content, scaled to carry
        the free budget and the mass of squares 1 and 2; square 2 is zeroed; then norm eps."""
        m, c, h, w = x.shape
        s = self._side(p, h, w)
        top1, left1, top2, left2 = (self._positions(m, s, size, x, gen) for size in (h, w, h, w))
        win1, win2 = _window(top1, left1, s, h, w), _window(top2, left2, s, h, w)
        delta = x_best - x
        old = delta * win1
        old = old / (torch.linalg.vector_norm(old, dim=(2, 3), keepdim=True) + _FLOOR)
        bump = _place(self._bumps(s, (m,), x, gen), top1, left1, h, w)
        new = bump * self._signs((m, c, 1, 1), x, gen) + old
        # Per channel: the free budget split over the channels plus both squares' mass (as the reference).
        mass = ((self.eps**2 - _norm(delta) ** 2).clamp(min=0) / c + _norm(delta * (win1 | win2)) ** 2).sqrt()
        new = new / (torch.linalg.vector_norm(new, dim=(2, 3), keepdim=True) + _FLOOR) * mass
        delta = torch.where(win1, new, delta.masked_fill(win2, 0))
        return (x + self.eps * delta / (_norm(delta) + _FLOOR)).clamp(0, 1)
