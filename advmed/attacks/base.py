"""Shared machinery of the attacks: input checks, the model-mode guard, the result record,
the gradient of the loss w.r.t. the input, and the loop of the iterative attacks.

Contract (DESIGN.md, "Attacks take the model when called"): an attack is built from config
before any model exists and called as ``attack(model, x, y)``. During the call the model is
in eval mode (each submodule's mode is restored afterwards), its weights are never changed
and no ``.grad`` is written to its parameters (the gradient is taken w.r.t. the input only,
with ``torch.autograd.grad``). ``x`` is float in [0, 1], ``(N, C, H, W)``; normalisation
lives inside the model. ``x_adv`` has the shape, dtype and device of ``x`` and stays in
[0, 1] and inside the attack's budget.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from advmed.attacks.losses import AttackObjective
from advmed.attacks.trace import AttackTrace, TraceRecorder
from advmed.attacks.validation import (
    as_float,
    check_alpha,
    check_amp,
    check_classes,
    check_eps,
    check_steps,
)


def _is_label_tensor(t: object) -> bool:
    return isinstance(t, Tensor) and not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _describe(t: object) -> str:
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else repr(t)


def _usable(t: Tensor) -> Tensor:
    # Tensors made under inference_mode cannot be saved for backward; a clone outside it can.
    return t.clone() if t.is_inference() else t


# --------------------------------------------------------------------------- model mode


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the attack; afterwards every submodule gets its own mode back (a model in
    train mode with frozen, eval-mode BatchNorm layers stays exactly that way)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


# --------------------------------------------------------------------------- one call


class AttackBatch:
    """Call-time state: the checked inputs of one ``attack(model, x, y, ...)`` call and the
    forward / gradient helpers every attack uses. ``idx`` arguments select the samples still
    being attacked (None: the whole batch)."""

    def __init__(
        self,
        attack: Attack,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        mask: Tensor | None,
    ):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4:
            raise ValueError(f"x must be a float tensor of shape (N, C, H, W), got {_describe(x)}")
        lo, hi = torch.aminmax(x.detach())
        lo, hi = lo.item(), hi.item()
        if not (0.0 <= lo and hi <= 1.0):  # also rejects NaN
            raise ValueError(
                f"x must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]: images stay in pixel space "
                "and normalisation (mean/std) belongs inside the model"
            )
        n = x.shape[0]
        if not _is_label_tensor(y) or y.ndim not in (1, 3) or y.shape[0] != n:
            raise ValueError(
                f"y must be integer labels of shape (N,) for classification or (N, H, W) for segmentation "
                f"with N={n}, got {_describe(y)}"
            )
        if target is not None:
            if not attack.targeted:
                raise ValueError(
                    "target labels were given but the attack is untargeted; build it with targeted=True"
                )
            if not _is_label_tensor(target) or target.shape != y.shape:
                raise ValueError(
                    f"target must be integer labels shaped like y {tuple(y.shape)}, got {_describe(target)}"
                )
        elif attack.targeted and attack.target_class is None:
            raise ValueError(
                "a targeted attack needs target labels at call time (target=...) "
                "or a fixed target_class in its config"
            )
        if mask is not None and (
            not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != y.shape
        ):
            raise ValueError(
                f"mask must be a bool tensor shaped like y {tuple(y.shape)}, got {_describe(mask)}"
            )

        device = x.device
        self.model = model
        self.x = _usable(x.detach())
        self.y = _usable(y.detach()).to(device=device, dtype=torch.long)
        if attack.targeted:
            self.ref = (
                torch.full_like(self.y, attack.target_class)
                if target is None
                else _usable(target.detach()).to(device=device, dtype=torch.long)
            )
        else:
            self.ref = self.y
        self.weight = attack.objective.pixel_weight(
            self.y, None if mask is None else _usable(mask).to(device)
        )
        self._attack = attack
        self._autocast = (
            torch.autocast(device.type, dtype=attack.amp_dtype)
            if attack.amp_dtype is not None
            else contextlib.nullcontext()
        )
        self._checked = False

    def _check_logits(self, logits: Tensor) -> None:
        """First forward only: the labels must fit the model's output."""
        y, n = self.y, self.y.shape[0]
        if not isinstance(logits, Tensor) or logits.ndim not in (2, 4) or logits.shape[0] != n:
            raise ValueError(
                f"the model must return logits (N, K) or (N, K, H, W) with N={n}, got {_describe(logits)}"
            )
        k = logits.shape[1]
        expected = (n,) if logits.ndim == 2 else (n, *logits.shape[2:])
        if tuple(y.shape) != expected:
            raise ValueError(
                f"y has shape {tuple(y.shape)} but the model's logits {tuple(logits.shape)} "
                f"need labels of shape {expected}"
            )
        if k < 2:
            raise ValueError(f"the model must return logits of K >= 2 classes, got K={k}")
        attack = self._attack
        for name, labels in {"y": y, "target": self.ref}.items() if attack.targeted else [("y", y)]:
            lo, hi = torch.aminmax(labels)
            if lo.item() < 0 or hi.item() >= k:
                raise ValueError(
                    f"{name} holds labels in [{lo.item()}, {hi.item()}], outside [0, {k - 1}] "
                    f"for a model with K={k} classes"
                    + (": set target_class to a class index below K" if name == "target" else "")
                )
        if attack.loss_classes is not None and max(attack.loss_classes) >= k:
            raise ValueError(f"loss_classes={list(attack.loss_classes)} has classes >= K={k}")
        if attack.loss == "dice" and logits.ndim != 4:
            raise ValueError(
                "loss='dice' needs segmentation logits (N, K, H, W); use loss='ce' for classification"
            )
        self._checked = True

    def _forward(self, x: Tensor) -> Tensor:
        with self._autocast:
            logits = self.model(x)
        if not self._checked:
            self._check_logits(logits)
        return logits

    def predict(self, x: Tensor) -> Tensor:
        """Logits without a graph (for trace rows that no gradient step needs)."""
        with torch.no_grad():
            return self._forward(x)

    def _select(self, idx: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Reference labels and pixel weights of the samples ``idx``."""
        if idx is None:
            return self.ref, self.weight
        return self.ref[idx], None if self.weight is None else self.weight[idx]

    def gradient(self, x: Tensor, idx: Tensor | None) -> tuple[Tensor, Tensor]:
        """Logits at ``x`` and the gradient of the summed per-sample objective w.r.t. ``x``."""
        leaf = x.detach().requires_grad_(True)
        logits = self._forward(leaf)
        objective = self._attack.objective(logits, *self._select(idx))
        # Input gradient only: autograd skips every parameter gradient and never touches .grad.
        (grad,) = torch.autograd.grad(objective.sum(), leaf)
        return logits.detach(), grad

    def goal_confidence(self, logits: Tensor, idx: Tensor | None) -> Tensor:
        """Per sample: the model's probability of the attack's goal at the logits' iterate.
        Targeted: p(target); untargeted: the largest probability of a wrong class. Segmentation:
        the mean over the loss's pixels."""
        ref, weight = self._select(idx)
        probs = logits.float().softmax(1)
        if self._attack.targeted:
            goal = probs.gather(1, ref.unsqueeze(1)).squeeze(1)
        else:
            goal = probs.scatter(1, ref.unsqueeze(1), 0.0).amax(1)
        n = goal.shape[0]
        if weight is None:
            return goal.reshape(n, -1).mean(1)
        weight = weight.reshape(n, -1)
        return (goal.reshape(n, -1) * weight).sum(1) / weight.sum(1).clamp_min(1)

    def fooled(self, logits: Tensor, idx: Tensor | None) -> Tensor:
        """Per sample: is the model fooled at the logits' iterate? Untargeted: prediction != y;
        targeted: prediction == target. Segmentation: the fooled fraction of the loss's pixels
        is >= ``fooled_fraction``."""
        ref, weight = self._select(idx)
        pred = logits.argmax(1)
        hit = (pred == ref) if self._attack.targeted else (pred != ref)
        n = hit.shape[0]
        if weight is None:
            frac = hit.reshape(n, -1).float().mean(1)
        else:
            weight = weight.reshape(n, -1)
            frac = (hit.reshape(n, -1) * weight).sum(1) / weight.sum(1).clamp_min(1)
        return frac >= self._attack.fooled_fraction


# --------------------------------------------------------------------------- results


@dataclass
class AttackResult:
    """What one call of :meth:`Attack.run` produced.

    Attributes:
        x_adv: the adversarial images, shape, dtype and device of ``x``.
        trace: the per-step record of an iterative attack built with ``trace=True``, else None.
        region: bool ``(N, 1, H, W)``, the pixels the attack was allowed to change when its
            budget is a region (patch attacks); None when it may change every pixel.
        stats: per-sample figures an attack reports beyond the perturbation size, name ->
            ``(N,)`` tensor (e.g. SNAP's ``area_fraction``); callers log their means.
    """

    x_adv: Tensor
    trace: AttackTrace | None = None
    region: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------- base classes


class Attack(abc.ABC):
    """Base of every attack. Subclasses implement :meth:`_perturb`.

    Keyword args shared by all attacks:
        targeted: pull the prediction toward target labels instead of away from ``y``.
        target_class: fixed target class for every sample/pixel (targeted only); ``target=``
            labels given at call time take precedence.
        loss: ``"ce"`` (cross-entropy) or ``"dice"`` (soft Dice, segmentation); see
            :mod:`advmed.attacks.losses`.
        loss_classes: restrict the loss to these classes (CE: pixels whose true label is listed).
        amp_dtype: ``"bf16"``, ``"fp16"`` or None: autocast the model's forward/backward; the
            perturbation and the loss stay in the dtype of ``x`` / float32. bf16 is the safe
            choice; fp16 gradients of the input can underflow.
        channels_last: run the model on channels_last input (faster convolutions on GPUs);
            for the full gain also convert the model once with
            ``model.to(memory_format=torch.channels_last)``: the attack never changes the model.

    Attributes: ``norm`` is the budget's norm (``"linf"`` or ``"l2"``), ``eps`` its radius.
    """

    norm: ClassVar[str] = "linf"
    _eps_upper: ClassVar[float | None] = 1.0
    trace: bool = False

    def __init__(
        self,
        eps: float,
        *,
        targeted: bool = False,
        target_class: int | None = None,
        loss: str = "ce",
        loss_classes: Sequence[int] | None = None,
        amp_dtype: str | torch.dtype | None = None,
        channels_last: bool = False,
    ):
        self.eps = check_eps(eps, upper=self._eps_upper)
        if target_class is not None:
            if isinstance(target_class, bool) or not isinstance(target_class, int) or target_class < 0:
                raise ValueError(f"target_class must be a class index >= 0 or null, got {target_class!r}")
            if not targeted:
                raise ValueError(f"target_class={target_class} needs targeted=true")
        self.targeted = bool(targeted)
        self.target_class = target_class
        self.loss_classes = check_classes("loss_classes", loss_classes)
        self.objective = AttackObjective(loss, targeted=self.targeted, loss_classes=self.loss_classes)
        self.loss = loss
        self.amp_dtype = check_amp(amp_dtype)
        self.channels_last = bool(channels_last)

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, AttackTrace]:
        """Attack ``model`` on ``x`` with labels ``y``.

        Args:
            model: returns logits ``(N, K)`` or ``(N, K, H, W)`` for images in [0, 1].
            x: images ``(N, C, H, W)``, float in [0, 1].
            y: true labels ``(N,)`` or ``(N, H, W)``.
            target: target labels shaped like ``y`` (targeted attacks without ``target_class``).
            mask: bool, shaped like ``y``: only these pixels enter the loss.

        Returns:
            ``x_adv`` (shape, dtype and device of ``x``), or ``(x_adv, trace)`` for an
            iterative attack built with ``trace=True``. :meth:`run` returns everything.
        """
        result = self.run(model, x, y, target, mask)
        return (result.x_adv, result.trace) if self.trace else result.x_adv

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> AttackResult:
        """Like calling the attack, but returns the whole :class:`AttackResult` (region, stats)."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"{type(self).__name__} needs gradients but was called under torch.inference_mode(); "
                "set trainer.inference_mode=false (Lightning's test/validate/predict loops use inference "
                "mode by default) or call the attack outside torch.inference_mode()"
            )
        batch = AttackBatch(self, model, x, y, target, mask)
        if self.channels_last:
            batch.x = batch.x.contiguous(memory_format=torch.channels_last)
        with eval_mode(model), torch.enable_grad():
            result = self._perturb(batch)
        if self.channels_last and x.is_contiguous():
            result.x_adv = result.x_adv.contiguous()
        return result

    @abc.abstractmethod
    def _perturb(self, batch: AttackBatch) -> AttackResult:
        """The adversarial images for ``batch`` (and the trace when ``self.trace``)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "objective")
        return f"{type(self).__name__}({args})"


class IterativeAttack(Attack):
    """Base of the iterative attacks (BIM, PGD, PGD-L2): ``steps`` gradient steps of size
    ``alpha``, each followed by the projection onto the budget and onto [0, 1].

    Subclasses set ``alpha_rule`` (the default ``alpha = alpha_rule * eps / steps``) and
    implement :meth:`_step`; random-start attacks override :meth:`_start` and set
    ``random_start`` (the trace then reads the clean prediction with one more forward).

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
            logits, grad = batch.gradient(x_cur, active)
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
