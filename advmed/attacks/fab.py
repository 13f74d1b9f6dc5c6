"""Fast Adaptive Boundary attack (FAB) and its targeted variant FAB-T, under an L-inf or an L2 budget.

Written by hand: no maintained library offers FAB as an advmed attack (model given at call
time, a private seeded generator, the eps-bounded result AutoAttack counts, the few-class cases
of medical data). The reference implementation (fra31/auto-attack, ``fab_base.py``,
``fab_pt.py``, ``fab_projections.py``), the original code (fra31/fab-attack) and
``torchattacks.FAB`` were read for the defaults and the algorithm; the projections are derived
afresh in :mod:`advmed.attacks.core.fab_projections`. Where this module departs from the
reference, :class:`FAB` ("Differences") says so and why.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import Tensor

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.fab_projections import project_onto_hyperplane_in_box
from advmed.attacks.core.margin_losses import target_classes
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.validation import (
    as_float,
    check_count,
    check_seed,
    check_steps,
    looks_like_probabilities,
)

log = logging.getLogger(__name__)

NORMS = ("linf", "l2")
# The dual norm q (1/p + 1/q = 1) measures the gradient in the distance to a linearised
# boundary: |f(x)| / ||grad f(x)||_q is the p-norm distance from x to {z : f(x) + <grad f(x), z - x> = 0}.
DUAL_ORD = {"linf": 1, "l2": 2}
# Keeps the distance to a boundary whose gradient vanishes finite (the original's 1e-12).
_FLOOR = 1e-12
# Floor of the two step sizes in the bias alpha (the original's 1e-8): no 0 / 0 at a boundary.
_SIZE_FLOOR = 1e-8


def _size(t: Tensor, norm: str) -> Tensor:
    """Per-row norm of a flat ``(n, D)`` tensor."""
    return t.abs().amax(1) if norm == "linf" else torch.linalg.vector_norm(t, dim=1)


class FAB(Attack):
    """FAB (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast
    adaptive boundary attack", Algorithm 1): a minimum-norm attack that steps, from the
    current iterate ``x_i``, onto the nearest decision boundary of its linearisation.

    One iteration, for a sample of class ``c`` at the clean point ``x_orig``:

    1. linearise the boundaries ``f_l - f_c = 0`` at ``x_i`` (``l != c``) and pick the nearest
       in the attack's norm, ``s = argmin_l |f_l - f_c| / ||grad f_l - grad f_c||_q``
       (``q`` the dual norm: 1 for L-inf, 2 for L2);
    2. project both ``x_i`` and ``x_orig`` onto that hyperplane intersected with the box
       [0, 1]^D (the minimal-norm steps ``delta`` and ``delta_orig``;
       :mod:`advmed.attacks.core.fab_projections`);
    3. step, biased toward the clean point (the paper's convex combination):
       ``x_{i+1} = clip((1 - a)(x_i + eta delta) + a (x_orig + eta delta_orig), 0, 1)`` with
       ``a = min(||delta|| / (||delta|| + ||delta_orig||), alpha_max)`` and overshoot ``eta``;
    4. if ``x_{i+1}`` is adversarial, keep it when it is the closest so far and take the
       backward step ``x_{i+1} = x_orig + beta (x_{i+1} - x_orig)`` (the paper's final search
       toward smaller perturbations).

    Restarts (the paper's random restarts, AutoAttack's scheme): the first run starts from
    ``x_orig``; each later one only on the samples not yet broken within eps, from a random
    point at radius ``min(u, eps) / 2`` around ``x_orig`` (``u`` the smallest adversarial norm
    found so far; L-inf: ``u ~ U(-1, 1)`` scaled to that L-inf radius; L2: a Gaussian scaled to
    that L2 radius), clipped to [0, 1].

    FAB-T (``multi_targeted=True``, AutoAttack's targeted FAB): one group of runs per target,
    the targets being the 2nd, 3rd, ... most likely classes of the clean input,
    ``min(n_target_classes, K - 1)`` of them; a run linearises only the boundary between the
    true class and its target and succeeds on any misclassification (as the reference); each
    later target runs only on the samples not yet broken. ``targeted=True`` (targets given at
    call time or by ``target_class``) pulls toward the given target: the boundary is that of
    the target and its strongest rival at ``x_i``, ``f_t - max_{l != t} f_l`` (the true class
    while it still wins, as FAB-T), and a sample is broken when predicted as its target.

    Budget. FAB finds the smallest perturbation it can; an advmed attack stays inside its
    budget. So, as AutoAttack counts FAB, a sample counts as broken only when its smallest
    adversarial point is within eps: ``x_adv`` holds that point, else ``x`` itself (also for
    samples the clean input already fools, and for those that ``mask`` / ``loss_classes``
    leave out). ``run(...).stats["fab_norm"]`` is, per sample, ``min(u, eps)``: 0 for samples
    fooled on the clean input, eps for those FAB could not break within eps. Its mean is the
    area under FAB's robust-accuracy curve over the radii [0, eps].

    The Jacobian: untargeted FAB needs the gradients of all ``K - 1`` logit differences
    ``f_l - f_c``. They are taken with ``K - 1`` input-gradient passes through one retained
    graph (``torch.autograd.grad``, each batched over the samples; one pass for K = 2, one for
    FAB-T and targeted runs). Not ``torch.func`` (``jacrev`` / ``vmap``): that needs batching
    rules for every operation of an arbitrary model and holds all ``K - 1`` backward passes'
    activations at once; nor a batch replicated K times (K times the forward's memory). The
    loop costs what the reference's does.

    Args:
        eps: budget; L-inf: in [0, 1]; L2: a radius >= 0 in [0, 1]-pixel units over (C, H, W).
            Also sets the random restarts' radius (above).
        norm: ``"Linf"`` or ``"L2"`` (case-insensitive; stored as ``"linf"`` / ``"l2"``).
        steps: iterations per run (the paper's N_iter; 100 as in AutoAttack).
        n_restarts: runs per target (the first from ``x``), each on the samples not yet broken.
        multi_targeted: FAB-T (above); needs ``targeted=False``.
        n_target_classes: FAB-T's number of targets (capped at K - 1; 9 as in AutoAttack).
        alpha_max: in [0, 1], the largest bias toward the clean point (the paper's 0.1).
        eta: >= 1, the overshoot past the linearised boundary (the paper's 1.05).
        beta: in (0, 1], the backward step toward the clean point (the paper's 0.9).
        seed: seeds a private generator for the random restarts, so a call neither depends on
            nor advances the global RNG (0 as the original); None: the global RNG.
        loss: only ``"ce"`` (the default), and FAB ignores it: it works on the logits' decision
            boundaries, not on a loss; any other value is refused.
        Other keyword args (targeted, target_class, loss_classes, amp_dtype, channels_last):
            see :class:`Attack`. FAB is defined on classification logits ``(N, K)`` only; it
            refuses segmentation logits with a clear error.

    Differences from the reference (fra31/auto-attack) and ``torchattacks.FAB``:

    * a later restart starts at radius ``min(u, eps) / 2`` as the original FAB code, where the
      reference resets ``u`` per run and always uses ``eps / 2``; since only the samples not
      broken within eps are restarted, the two agree on every restarted sample;
    * ``targeted=True`` with given targets is advmed's: the reference has no FAB toward given
      targets (``torchattacks.FAB``'s targeted mode indexes the sorted classes with the target
      labels themselves), so the boundary and the success rule above are chosen to pull toward
      the target;
    * untargeted FAB takes ``K - 1`` gradient passes of the logit differences instead of the
      reference's ``K`` passes of the logits (the same linearisation, one pass fewer);
    * the projections solve the same problems by ``searchsorted`` on the sorted breakpoints
      instead of a bisection (exact to float rounding, tested against linear programs);
    * the result is returned in the dtype of ``x`` (the reference casts to float32); the
      paper's L1 version is not carried.
    """

    def __init__(
        self,
        eps: float,
        norm: str = "Linf",
        steps: int = 100,
        n_restarts: int = 1,
        *,
        multi_targeted: bool = False,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = 0,
        **common,
    ):
        norm_name = str(norm).lower()
        if norm_name not in NORMS:
            raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
        loss = common.get("loss", "ce")
        if loss != "ce":
            raise ValueError(
                f"loss must be one of ('ce',), got {loss!r}: FAB has no loss (it steps onto the linearised "
                "decision boundaries of the logits); leave loss='ce', the default, which it ignores"
            )
        # Set before the base checks eps: L-inf in [0, 1], L2 any radius >= 0.
        self.norm = norm_name
        self._eps_upper = None if norm_name == "l2" else 1.0
        super().__init__(eps, **common)
        self.steps = check_steps(steps)
        self.n_restarts = check_count("n_restarts", n_restarts)
        self.multi_targeted = bool(multi_targeted)
        if self.multi_targeted and self.targeted:
            raise ValueError(
                "multi_targeted=true (FAB-T) picks its own targets (the most likely wrong classes) and must be "
                "untargeted; to pull toward given targets use targeted=true with multi_targeted=false"
            )
        self.n_target_classes = check_count("n_target_classes", n_target_classes)
        self.alpha_max = as_float("alpha_max", alpha_max)
        if not 0 <= self.alpha_max <= 1:
            raise ValueError(f"alpha_max must be in [0, 1], got {self.alpha_max:g}")
        self.eta = as_float("eta", eta)
        if self.eta < 1:
            raise ValueError(f"eta (the overshoot past the linearised boundary) must be >= 1, got {self.eta:g}")
        self.beta = as_float("beta", beta)
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {self.beta:g}")
        self.seed = check_seed(seed)
        self._warned: set[str] = set()  # each warning once per attack, not once per batch

    # ------------------------------------------------------------------ the call

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        clean = batch.predict(x)  # also checks the logits against the labels (K >= 2, shapes)
        self._check_output(clean)
        gen = torch.Generator(device=x.device).manual_seed(self.seed) if self.seed is not None else None

        pred = clean.argmax(1)
        done = (pred == batch.ref) if self.targeted else (pred != batch.y)
        # Smallest adversarial norm found per sample: 0 where the clean input already fools.
        found = torch.where(done, 0.0, float("inf")).to(x.dtype)
        # mask / loss_classes weigh classification samples 0 or 1: a 0 leaves the sample alone.
        active = torch.ones_like(done) if batch.weight is None else batch.weight > 0
        x_out = x.clone()  # never the caller's storage
        everyone = torch.arange(x.shape[0], device=x.device)
        for target in self._targets(batch, clean):
            for restart in range(self.n_restarts):
                idx = everyone[active & ~done]
                if idx.numel() == 0:
                    break
                # Later restarts start at a radius tied to the best norm so far (eps / 2 for every
                # sample restarted here, since those broken within eps are not).
                radius = None if restart == 0 else 0.5 * found[idx].clamp(max=self.eps)
                best_x, best_norm = self._run(batch, idx, None if target is None else target[idx], radius, gen)
                found[idx] = torch.minimum(found[idx], best_norm)
                within = best_norm <= self.eps
                x_out.index_copy_(0, idx[within], best_x[within])
                done[idx] = within
        return AttackResult(x_out, stats={"fab_norm": found.clamp(max=self.eps)})

    def _check_output(self, clean: Tensor) -> None:
        if clean.ndim != 2:
            raise ValueError(
                f"FAB is defined on classification logits (N, K), got {tuple(clean.shape)}: it steps onto the "
                "decision boundaries of one prediction per image; for segmentation use PGD, APGD or SegPGD"
            )
        if looks_like_probabilities(clean):
            self._warn_once(
                "probabilities",
                "FAB: the model's outputs look like probabilities (every row in [0, 1], summing to 1); "
                "FAB linearises the decision boundaries of the logits: drop the final softmax",
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _targets(self, batch: AttackBatch, clean: Tensor) -> list[Tensor | None]:
        """One entry per group of runs: None (untargeted FAB), each FAB-T target ``(N,)`` in turn,
        or the given targets."""
        if self.multi_targeted:
            return list(target_classes(clean, self.n_target_classes).unbind(1))
        return [batch.ref] if self.targeted else [None]

    # ------------------------------------------------------------------ one run (Algorithm 1)

    def _run(
        self, batch: AttackBatch, idx: Tensor, target: Tensor | None, radius: Tensor | None, gen: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """One FAB run on the samples ``idx``: per sample, the closest adversarial point found
        ``(m, C, H, W)`` (``x`` where none) and its norm (inf where none)."""
        m = idx.numel()
        shape = (m, *batch.x.shape[1:])
        # Flat rows in the logical (C, H, W) order, whatever the memory layout of x.
        x0 = batch.x[idx].reshape(m, -1)
        y = batch.y[idx]
        x_cur = x0 if radius is None else self._start(x0, radius, gen)
        best_x, best_norm = x0.clone(), torch.full((m,), float("inf"), dtype=x0.dtype, device=x0.device)
        rows = torch.arange(m, device=x0.device)
        for _ in range(self.steps):
            diff, grad = self._boundaries(batch, x_cur, shape, y, target)
            # The nearest linearised boundary in the attack's norm.
            dist = diff.abs() / (torch.linalg.vector_norm(grad, ord=DUAL_ORD[self.norm], dim=2) + _FLOOR)
            nearest = dist.argmin(1)
            w, c_cur = grad[rows, nearest], diff[rows, nearest]
            c_orig = c_cur + ((x0 - x_cur) * w).sum(1)  # the same affine function, at x_orig
            # Both projections in one batched call.
            delta = project_onto_hyperplane_in_box(
                torch.cat([x_cur, x0]), torch.cat([w, w]), torch.cat([c_cur, c_orig]), self.norm
            )
            size = _size(delta, self.norm).clamp_min(_SIZE_FLOOR)
            alpha = (size[:m] / (size[:m] + size[m:])).clamp(0, self.alpha_max).unsqueeze(1)
            x_cur = ((1 - alpha) * (x_cur + self.eta * delta[:m]) + alpha * (x0 + self.eta * delta[m:])).clamp(0, 1)

            pred = batch.predict(self._image(x_cur, shape)).argmax(1)
            adv = (pred == target) if self.targeted else (pred != y)
            dist0 = _size(x_cur - x0, self.norm)
            closer = adv & (dist0 < best_norm)
            best_x = torch.where(closer.unsqueeze(1), x_cur, best_x)
            best_norm = torch.where(closer, dist0, best_norm)
            # The backward step: from an adversarial point, back toward x_orig.
            x_cur = torch.where(adv.unsqueeze(1), x0 + self.beta * (x_cur - x0), x_cur)
        return best_x.view(shape), best_norm

    def _image(self, flat: Tensor, shape: tuple[int, ...]) -> Tensor:
        image = flat.view(shape)
        return image.contiguous(memory_format=torch.channels_last) if self.channels_last else image

    def _start(self, x0: Tensor, radius: Tensor, gen: torch.Generator | None) -> Tensor:
        """A random point at ``radius`` (per row, in the attack's norm) around ``x0``, in [0, 1]."""
        noise = torch.empty_like(x0)
        if self.norm == "linf":
            noise.uniform_(0, 1, generator=gen).mul_(2).sub_(1)
        else:
            noise.normal_(generator=gen)
        scale = _size(noise, self.norm).clamp_min(_FLOOR).unsqueeze(1)
        return (x0 + radius.unsqueeze(1) * noise / scale).clamp(0, 1)

    def _boundaries(
        self, batch: AttackBatch, x_cur: Tensor, shape: tuple[int, ...], y: Tensor, target: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The logit differences ``f_other - f_base`` ``(m, M)`` at ``x_cur`` and their input
        gradients ``(m, M, D)``: untargeted, every other class against the true one (M = K - 1);
        FAB-T, the target against the true class; targeted, the target against its strongest
        rival (M = 1)."""
        leaf = self._image(x_cur, shape).detach().requires_grad_(True)
        autocast = (
            torch.autocast(leaf.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            logits = batch.model(leaf)
        z = logits.float()
        m, k = z.shape
        if target is None:
            base = y
            classes = torch.arange(k, device=z.device).expand(m, k)
            others = classes[classes != y.unsqueeze(1)].view(m, k - 1)
        else:
            others = target.unsqueeze(1)
            base = z.scatter(1, others, float("-inf")).argmax(1) if self.targeted else y
        diff = z.gather(1, others) - z.gather(1, base.unsqueeze(1))
        grads = []
        for j in range(others.shape[1]):
            # Input gradient only: autograd skips every parameter gradient and never touches .grad.
            (g,) = torch.autograd.grad(diff[:, j].sum(), leaf, retain_graph=j + 1 < others.shape[1])
            grads.append(g.reshape(m, -1))
        return diff.detach().to(leaf.dtype), torch.stack(grads, 1)
