"""Running the PGD study's attacks: one traced PGD-``max_iter`` per eps on every test batch and,
unless ``study.apgd=false``, one APGD-CE with as many iterations beside it, kept as per-image
fooled flags (:class:`StudyRecords`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advmed.attacks import APGD, PGD
from advmed.attacks.core.model_mode import eval_mode
from advmed.metrics.attack_success import attack_success_mask
from advmed.studies.pgd_study_settings import StudySettings
from advmed.utils.progress import DEFAULT_EVERY_S, ProgressReporter


@dataclass(frozen=True)
class StudyRecords:
    """Per-image outcome of the study, everything on the CPU.

    ``fooled[e, i, n]``: image ``n`` is eligible and misclassified after PGD step ``i + 1`` at
    ``eps[e]``; a bool tensor ``(len(eps), max_iter, N)``. ``alpha[e]`` is the step used at ``eps[e]``.
    ``apgd_fooled[e, n]``: the same after APGD-CE with ``max_iter`` iterations, ``(len(eps), N)``;
    None when the study ran without APGD.
    """

    eps: tuple[float, ...]
    alpha: tuple[float, ...]
    labels: Tensor
    clean_pred: Tensor
    clean_confidence: Tensor
    fooled: Tensor
    apgd_fooled: Tensor | None = None

    @property
    def eligible(self) -> Tensor:
        """Images classified correctly before the attack: the only ones a success rate counts."""
        return self.clean_pred == self.labels


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _planned(loader: Iterable, max_images: int | None) -> tuple[int | None, int | None]:
    """Images and batches the study will attack, as far as ``loader`` tells (None: unknown)."""
    dataset, batch_size = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
    try:
        images = len(dataset) if dataset is not None else None
        batches = len(loader)
    except TypeError:  # an iterable dataset or a plain generator
        images, batches = None, None
    if max_images is not None:
        images = max_images if images is None else min(images, max_images)
        batches = math.ceil(images / batch_size) if batch_size else None
    return images, batches


def apgd_attacks(settings: StudySettings) -> list[APGD]:
    """APGD-CE at each eps of ``settings`` with the PGD run's iterations, random-start switch and
    seed (one restart, L-inf; its step size adapts, so PGD's ``alpha`` does not apply). The study
    counts fooled images only, so a fooled image leaves the run (``early_stop``: same rates, fewer passes)."""
    return [
        APGD(eps, norm="Linf", steps=settings.max_iter, n_restarts=1, loss="ce",
             random_start=settings.random_start, seed=settings.seed, early_stop=True)
        for eps in settings.eps
    ]


def _apgd_pred(attack: APGD, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The prediction (eval mode, as the attack saw the model) on APGD's adversarial images."""
    x_adv = attack.run(model, x, y).x_adv
    with eval_mode(model), torch.no_grad():
        return model(x_adv).argmax(1)


def attack_records(
    model: nn.Module,
    loader: Iterable,
    settings: StudySettings,
    device: torch.device | str | None = None,
    *,
    progress_every_s: float = DEFAULT_EVERY_S,
) -> StudyRecords:
    """Run one traced PGD-``max_iter`` per eps on every batch of ``loader`` (``(x, y)``, x in [0, 1])
    and, with ``settings.apgd``, one APGD-CE-``max_iter`` per eps on the same batch.

    ``device``: where to attack (the model is moved there); None: the model's own device.
    Progress (:class:`~advmed.utils.progress.ProgressReporter`): a bar in a terminal, else a line
    at most every ``progress_every_s`` seconds: images done / total, images/s, time left, the
    batch, the attack and the eps being run.
    """
    device = torch.device(device) if device is not None else _device_of(model)
    model.to(device)
    attacks = [
        PGD(eps, alpha=settings.alpha, steps=settings.max_iter, random_start=settings.random_start,
            seed=settings.seed, trace=True)
        for eps in settings.eps
    ]
    apgds = apgd_attacks(settings) if settings.apgd else []
    runs_per_batch = len(attacks) + len(apgds)
    labels, clean_pred, clean_confidence, fooled, apgd_fooled = [], [], [], [], []
    seen = 0
    total_images, total_batches = _planned(loader, settings.max_images)
    progress = ProgressReporter("pgd study", total_images, unit="images", every_s=progress_every_s)
    with progress:
        for b, (x, y) in enumerate(loader):
            if settings.max_images is not None:
                x, y = x[: settings.max_images - seen], y[: settings.max_images - seen]
            x, y = x.to(device), y.to(device)
            traces = []
            for eps, attack in zip(settings.eps, attacks):
                # One PGD run per eps: minutes per batch on a CPU, so progress moves by eps, not by batch.
                progress.update(0, batch=f"{b + 1}/{total_batches or '?'}", attack="PGD", eps=eps)
                traces.append(attack(model, x, y)[1])
                progress.update(len(y) / runs_per_batch)
            # The clean input does not depend on eps: every trace holds the same clean prediction.
            clean = traces[0]
            labels.append(y.cpu())
            clean_pred.append(clean.clean_pred.cpu())
            clean_confidence.append(clean.clean_confidence.float().cpu())
            fooled.append(torch.stack([attack_success_mask(clean.clean_pred, t.pred, y)[1] for t in traces]).cpu())
            apgd_preds = []
            for eps, attack in zip(settings.eps, apgds):
                progress.update(0, batch=f"{b + 1}/{total_batches or '?'}", attack="APGD-CE", eps=eps)
                apgd_preds.append(_apgd_pred(attack, model, x, y))
                progress.update(len(y) / runs_per_batch)
            if apgds:  # eligible = correct before the attack: PGD's clean prediction, the same images
                apgd_fooled.append(
                    torch.stack([attack_success_mask(clean.clean_pred, p, y)[1] for p in apgd_preds]).cpu())
            seen += len(y)
            if settings.max_images is not None and seen >= settings.max_images:
                break
    if seen == 0:
        raise ValueError("the test dataloader yielded no images: check the data config and its test split")
    return StudyRecords(
        eps=settings.eps,
        alpha=tuple(attack.alpha for attack in attacks),
        labels=torch.cat(labels),
        clean_pred=torch.cat(clean_pred),
        clean_confidence=torch.cat(clean_confidence),
        fooled=torch.cat(fooled, dim=2),
        apgd_fooled=torch.cat(apgd_fooled, dim=1) if apgds else None,
    )
