"""The state of one attack call: the checked inputs of ``attack(model, x, y, ...)`` and the
forward / input-gradient / fooled helpers every attack works through.

The checks here are of the call's tensors (shapes, dtypes, the [0, 1] range, labels that fit
the model's logits); the attack's own config values are checked in
:mod:`advmed.attacks.core.validation` when it is built.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch
from torch import Tensor, nn

from advmed.attacks.core.losses import AttackObjective


class CallSettings(Protocol):
    """What :class:`AttackBatch` reads from the attack that is called (an
    :class:`~advmed.attacks.core.base.Attack`). A protocol rather than the class itself, so that this
    module sits below the base classes instead of importing them back."""

    targeted: bool
    target_class: int | None
    loss: str
    loss_classes: tuple[int, ...] | None
    objective: AttackObjective
    amp_dtype: torch.dtype | None
    # Iterative attacks only: read by AttackBatch.fooled, which only they call.
    fooled_fraction: float


def _is_label_tensor(t: object) -> bool:
    return isinstance(t, Tensor) and not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _describe(t: object) -> str:
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else repr(t)


def _usable(t: Tensor) -> Tensor:
    # Tensors made under inference_mode cannot be saved for backward; a clone outside it can.
    return t.clone() if t.is_inference() else t


class AttackBatch:
    """Call-time state: the checked inputs of one ``attack(model, x, y, ...)`` call and the
    forward / gradient helpers every attack uses. ``idx`` arguments select the samples still
    being attacked (None: the whole batch)."""

    def __init__(
        self,
        attack: CallSettings,
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

    def gradient(self, x: Tensor, idx: Tensor | None, step: int = 0) -> tuple[Tensor, Tensor]:
        """Logits at ``x`` and the gradient of the summed per-sample objective w.r.t. ``x``;
        ``step`` (the iteration) is passed on to the objective."""
        leaf = x.detach().requires_grad_(True)
        logits = self._forward(leaf)
        objective = self._attack.objective(logits, *self._select(idx), step=step)
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

