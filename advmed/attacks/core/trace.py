"""Per-step record of an iterative attack (``trace=True``).

One traced PGD-k run gives the whole success-vs-iterations curve 1..k: the prediction on
the iterate after every step is read from the forward pass that the next step needs for
its gradient anyway, so tracing costs about one extra forward in total (the last iterate,
plus the clean input when the attack starts from a random point).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AttackTrace:
    """What the model predicted on each iterate; row ``i`` is the iterate after step ``i + 1``.

    All tensors live on the device of the attacked batch; ``k`` is the number of steps and
    ``N`` the batch size. Samples frozen by ``early_stop`` repeat their last value.

    Classification (logits ``(N, K)``), the segmentation fields are ``None``:
        pred: ``(k, N)`` int64, predicted class.
        confidence: ``(k, N)`` float32, max softmax probability.
        clean_pred, clean_confidence: ``(N,)``, the same on the clean input.

    Segmentation (logits ``(N, K, H, W)``), the classification fields are ``None``; both
    scores use the whole image (not the loss mask):
        dice: ``(k, N)`` float32, hard Dice of the predicted map against ``y``, averaged over
            the foreground classes (1..K-1) present in the prediction or the label map;
            1.0 when neither holds any foreground.
        pixel_acc: ``(k, N)`` float32, fraction of pixels whose prediction equals ``y``.
        clean_dice, clean_pixel_acc: ``(N,)``, the same on the clean input.
    """

    pred: Tensor | None = None
    confidence: Tensor | None = None
    clean_pred: Tensor | None = None
    clean_confidence: Tensor | None = None
    dice: Tensor | None = None
    pixel_acc: Tensor | None = None
    clean_dice: Tensor | None = None
    clean_pixel_acc: Tensor | None = None

    @property
    def steps(self) -> int:
        """Number of recorded steps ``k``."""
        per_step = self.pred if self.pred is not None else self.dice
        return per_step.shape[0]

    def to(self, device: torch.device | str) -> AttackTrace:
        """A copy with every tensor moved to ``device`` (e.g. ``"cpu"`` before aggregating)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
        return dataclasses.replace(self, **moved)


def segmentation_scores(pred: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-image foreground Dice and pixel accuracy of label maps ``pred`` vs ``y`` (N, H, W).

    One ``bincount`` builds every image's confusion matrix at once, so the cost does not grow
    with the number of classes.
    """
    n, k = pred.shape[0], num_classes
    offsets = torch.arange(n, device=pred.device).unsqueeze(1) * (k * k)
    cells = (offsets + y.reshape(n, -1) * k + pred.reshape(n, -1)).reshape(-1)
    confusion = torch.bincount(cells, minlength=n * k * k).view(n, k, k).float()
    hits = confusion.diagonal(dim1=1, dim2=2)
    pixel_acc = hits.sum(1) / confusion.sum((1, 2))
    # Per class: true count + predicted count; a class is scored when either is non-zero.
    sizes = (confusion.sum(1) + confusion.sum(2))[:, 1:]
    present = sizes > 0
    per_class = 2 * hits[:, 1:] / sizes.clamp_min(1)
    n_present = present.sum(1)
    dice = torch.where(
        n_present > 0,
        (per_class * present).sum(1) / n_present.clamp_min(1),
        torch.ones_like(pixel_acc),
    )
    return dice, pixel_acc


class TraceRecorder:
    """Collects :class:`AttackTrace` rows from logits the attack loop has already computed."""

    def __init__(self, y: Tensor, steps: int):
        self._y = y
        self._steps = steps
        self._clean: dict[str, Tensor] | None = None
        self._current: dict[str, Tensor] = {}
        self._rows: list[dict[str, Tensor]] = []

    def _scores(self, logits: Tensor, idx: Tensor | None) -> dict[str, Tensor]:
        logits = logits.detach()
        if logits.ndim == 2:
            confidence, pred = logits.float().softmax(1).max(1)
            return {"pred": pred, "confidence": confidence}
        y = self._y if idx is None else self._y[idx]
        dice, pixel_acc = segmentation_scores(logits.argmax(1), y, logits.shape[1])
        return {"dice": dice, "pixel_acc": pixel_acc}

    def clean(self, logits: Tensor) -> None:
        """Scores of the clean input."""
        self._clean = self._scores(logits, None)

    def start(self, logits: Tensor) -> None:
        """Scores of the starting iterate (the clean input too unless ``clean`` was called)."""
        self._current = self._scores(logits, None)
        if self._clean is None:
            self._clean = self._current

    def record(self, logits: Tensor, idx: Tensor | None) -> None:
        """Next row: ``logits`` of the samples ``idx`` (all when None); the others keep their value."""
        scores = self._scores(logits, idx)
        if idx is None:
            self._current = scores
        else:
            # Out of place, so rows already appended are never modified.
            self._current = {k: v.index_copy(0, idx, scores[k]) for k, v in self._current.items()}
        self._rows.append(self._current)

    def finish(self, logits: Tensor | None, idx: Tensor | None) -> AttackTrace:
        """Record the last iterate (if any sample moved) and pad rows of frozen samples up to k."""
        if logits is not None:
            self.record(logits, idx)
        self._rows.extend([self._current] * (self._steps - len(self._rows)))
        fields = {k: torch.stack([row[k] for row in self._rows]) for k in self._current}
        fields.update({f"clean_{k}": v for k, v in self._clean.items()})
        return AttackTrace(**fields)
