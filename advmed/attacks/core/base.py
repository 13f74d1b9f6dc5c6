"""The base class of every attack (:class:`Attack`): the shared keyword arguments and the call.

Contract (DESIGN.md, "Attacks take the model when called"): an attack is built from config
before any model exists and called as ``attack(model, x, y)``. During the call the model is
in eval mode (each submodule's mode is restored afterwards), its weights are never changed
and no ``.grad`` is written to its parameters (the gradient is taken w.r.t. the input only,
with ``torch.autograd.grad``). ``x`` is float in [0, 1], ``(N, C, H, W)``; normalisation
lives inside the model. ``x_adv`` has the shape, dtype and device of ``x`` and stays in
[0, 1] and inside the attack's budget.

The pieces of a call live beside it: the checked inputs and the input gradient in
:mod:`advmed.attacks.core.batch`, the mode guard in :mod:`advmed.attacks.core.model_mode`, the result
record in :mod:`advmed.attacks.core.result`; the iterative attacks' base and loop in
:mod:`advmed.attacks.core.iterative`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.losses import AttackObjective
from advmed.attacks.core.model_mode import eval_mode
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.trace import AttackTrace
from advmed.attacks.core.validation import check_amp, check_classes, check_eps


class Attack(abc.ABC):
    """Base of every attack. Subclasses implement :meth:`_perturb`.

    Keyword args shared by all attacks:
        targeted: pull the prediction toward target labels instead of away from ``y``.
        target_class: fixed target class for every sample/pixel (targeted only); ``target=``
            labels given at call time take precedence.
        loss: ``"ce"`` (cross-entropy) or ``"dice"`` (soft Dice, segmentation); see
            :mod:`advmed.attacks.core.losses`.
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

    def report_notes(self, metrics: dict[str, float]) -> list[str]:
        """Lines a robustness report must carry beside the figures of this attack's test run
        (``metrics``: the logged means, ``test/*``): what the attack substituted, what looks
        unreliable. None by default."""
        return []

    def __repr__(self) -> str:
        # Settings only: the objective and private call state (a loaded patch, warnings given) are not.
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "objective" and not k.startswith("_"))
        return f"{type(self).__name__}({args})"
