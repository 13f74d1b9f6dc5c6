"""PGD attack-success study: success rate vs eps, vs iterations and vs clean confidence
(the paper's Fig. 3a-c); vs training-set size (Fig. 3d) comes from a multirun over
``data.train_fraction`` aggregated by ``experiments/pgd_study/aggregate.py``.

Definitions (as in the paper):

- **eligible** images are those the model classifies correctly before the attack. A natively
  misclassified image cannot be "fooled", so it is excluded from every success rate.
- **success rate** = eligible images misclassified after the attack / eligible images.
- **confidence** of an image is the clean max softmax probability. The range [low, high]
  (default [0.5, 1.0]) is cut into ``n`` equal bins ``[e_j, e_j+1)``, the last one closed;
  images below ``low`` fall in no bin and are counted in ``summary.json`` instead.

Cost: one traced PGD-``max_iter`` run per eps. With ``trace=True`` the attack records the
prediction after every step, and step i of a traced PGD-k run is exactly a PGD-i run with the
same step size and random start, so the iterations panel needs no extra attacks. Per image
the study keeps only its label, clean prediction and confidence, and one bool per
(eps, step): the fooled flags.

Step size: ``alpha: null`` uses PGD's rule ``alpha = 2.5 * eps / max_iter`` (Madry et al.:
``max_iter`` steps can cross the eps-ball 2.5 times, so the last iterations can still reach
its corners). Point i of the iterations curve is then PGD-i with that same step, not with
its own ``2.5 * eps / i``. The paper used one fixed step for every eps: set ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from advmed.attacks import PGD
from advmed.attacks.validation import check_alpha, check_eps, check_seed
from advmed.metrics.attack_success import attack_success_mask
from advmed.studies.pgd_study_figures import (
    plot_success_vs_confidence,
    plot_success_vs_eps,
    plot_success_vs_iterations,
)
from advmed.studies.tables import Table, write_csv
from advmed.utils.files import write_json
from advmed.utils.loggers import log_image, log_table
from advmed.utils.progress import DEFAULT_EVERY_S, ProgressReporter

# The paper's grid: 0.02 .. 0.20 in steps of 0.02 (fractions of the [0, 1] intensity range).
DEFAULT_EPS = tuple(round(0.02 * i, 2) for i in range(1, 11))


# --------------------------------------------------------------------------- settings


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_eps_list(values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"study.eps must be a list of budgets in [0, 1], got {values!r}")
    values = list(values)
    if not values:
        raise ValueError("study.eps is empty: give at least one budget in [0, 1], e.g. study.eps=[0.02,0.04]")
    checked = []
    for i, value in enumerate(values):
        try:
            checked.append(check_eps(value))
        except ValueError as err:
            raise ValueError(f"study.eps[{i}]: {err}") from None
    if len(set(checked)) != len(checked):
        raise ValueError(f"study.eps has repeated values: {values}")
    return tuple(sorted(checked))


@dataclass(frozen=True)
class ConfidenceBins:
    """``n`` equal bins over the clean confidence range ``[low, high]``: ``[e_j, e_j+1)``, last closed."""

    low: float = 0.5
    high: float = 1.0
    n: int = 10

    def __post_init__(self) -> None:
        low, high = float(self.low), float(self.high)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"study.confidence_bins needs 0 <= low < high <= 1, got low={low:g}, high={high:g}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        _positive_int("study.confidence_bins.n", self.n)

    def edges(self) -> Tensor:
        """The ``n + 1`` bin edges (float64, so that 0.55, 0.6, ... are as close as floats get)."""
        return torch.linspace(self.low, self.high, self.n + 1, dtype=torch.float64)

    def assign(self, confidence: Tensor) -> Tensor:
        """Bin index of each confidence, -1 outside ``[low, high]``."""
        c = confidence.double()
        index = torch.bucketize(c, self.edges(), right=True) - 1  # edges[i] <= c < edges[i + 1]
        index = torch.where(c == self.high, self.n - 1, index)  # the last bin includes `high`
        return torch.where((c < self.low) | (c > self.high), -1, index)


@dataclass(frozen=True)
class StudySettings:
    """What the study attacks with; the keys of the ``study:`` config node (``conf/study.yaml``).

    Args:
        eps: L-inf budgets in [0, 1]; sorted ascending.
        max_iter: PGD iterations; the iterations panel covers 1..max_iter.
        alpha: PGD step size; None: ``2.5 * eps / max_iter`` per eps (see the module docstring).
        random_start: start PGD from a uniform random point of the eps-ball.
        seed: seeds the random start (the same start for every eps and every batch of a given
            shape), so a study is reproducible; None: the global RNG.
        max_images: attack only the first ``max_images`` test images; None: all.
        confidence_bins: ``{low, high, n}`` of :class:`ConfidenceBins`.
    """

    eps: tuple[float, ...] = DEFAULT_EPS
    max_iter: int = 10
    alpha: float | None = None
    random_start: bool = True
    seed: int | None = 0
    max_images: int | None = None
    confidence_bins: ConfidenceBins = field(default_factory=ConfidenceBins)

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_eps_list(self.eps))
        _positive_int("study.max_iter", self.max_iter)
        try:
            object.__setattr__(self, "alpha", check_alpha(self.alpha))
            check_seed(self.seed)
        except ValueError as err:
            raise ValueError(f"study.{err}") from None
        if self.max_images is not None:
            _positive_int("study.max_images", self.max_images)
        bins = self.confidence_bins
        if isinstance(bins, Mapping):
            unknown = set(bins) - {f.name for f in fields(ConfidenceBins)}
            if unknown:
                raise ValueError(f"unknown study.confidence_bins key(s) {sorted(unknown)}; valid: low, high, n")
            object.__setattr__(self, "confidence_bins", ConfidenceBins(**bins))
        elif not isinstance(bins, ConfidenceBins):
            raise ValueError(f"study.confidence_bins must be {{low, high, n}}, got {bins!r}")

    @classmethod
    def from_config(cls, cfg: StudySettings | Mapping | DictConfig) -> StudySettings:
        """Settings from a ``study:`` config node; unknown keys (typos) are an error."""
        if isinstance(cfg, StudySettings):
            return cfg
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise ValueError(f"the study config must be a mapping of {[f.name for f in fields(cls)]}, got {cfg!r}")
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown study key(s) {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}")
        return cls(**cfg)


# --------------------------------------------------------------------------- attacking


@dataclass(frozen=True)
class StudyRecords:
    """Per-image outcome of the study, everything on the CPU.

    ``fooled[e, i, n]``: image ``n`` is eligible and misclassified after PGD step ``i + 1`` at
    ``eps[e]``; a bool tensor ``(len(eps), max_iter, N)``. ``alpha[e]`` is the step used at ``eps[e]``.
    """

    eps: tuple[float, ...]
    alpha: tuple[float, ...]
    labels: Tensor
    clean_pred: Tensor
    clean_confidence: Tensor
    fooled: Tensor

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


def attack_records(
    model: nn.Module,
    loader: Iterable,
    settings: StudySettings,
    device: torch.device | str | None = None,
    *,
    progress_every_s: float = DEFAULT_EVERY_S,
) -> StudyRecords:
    """Run one traced PGD-``max_iter`` per eps on every batch of ``loader`` (``(x, y)``, x in [0, 1]).

    ``device``: where to attack (the model is moved there); None: the model's own device.
    Progress (:class:`~advmed.utils.progress.ProgressReporter`): a bar in a terminal, else a line
    at most every ``progress_every_s`` seconds: images done / total, images/s, time left, the
    batch and the eps being run.
    """
    device = torch.device(device) if device is not None else _device_of(model)
    model.to(device)
    attacks = [
        PGD(eps, alpha=settings.alpha, steps=settings.max_iter, random_start=settings.random_start,
            seed=settings.seed, trace=True)
        for eps in settings.eps
    ]
    labels, clean_pred, clean_confidence, fooled = [], [], [], []
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
                progress.update(0, batch=f"{b + 1}/{total_batches or '?'}", eps=eps)
                traces.append(attack(model, x, y)[1])
                progress.update(len(y) / len(attacks))
            # The clean input does not depend on eps: every trace holds the same clean prediction.
            clean = traces[0]
            labels.append(y.cpu())
            clean_pred.append(clean.clean_pred.cpu())
            clean_confidence.append(clean.clean_confidence.float().cpu())
            fooled.append(torch.stack([attack_success_mask(clean.clean_pred, t.pred, y)[1] for t in traces]).cpu())
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
    )


# --------------------------------------------------------------------------- tables


def _rate(n_fooled: int, n_eligible: int) -> float:
    return n_fooled / n_eligible if n_eligible else math.nan  # undefined without eligible images


def eps_sweep_table(records: StudyRecords) -> Table:
    """Fig. 3a: success rate after ``max_iter`` steps, one row per eps."""
    n_images, n_eligible = len(records.labels), int(records.eligible.sum())
    rows = []
    for e, (eps, alpha) in enumerate(zip(records.eps, records.alpha)):
        n_fooled = int(records.fooled[e, -1].sum())
        rows.append([eps, alpha, n_images, n_eligible, n_fooled, _rate(n_fooled, n_eligible)])
    return Table(["eps", "alpha", "n_images", "n_eligible", "n_fooled", "success_rate"], rows)


def iterations_table(records: StudyRecords) -> Table:
    """Fig. 3b: success rate after each step 1..max_iter, for each eps."""
    n_eligible = int(records.eligible.sum())
    counts = records.fooled.sum(2)  # (E, max_iter)
    rows = [
        [eps, step + 1, n_eligible, int(counts[e, step]), _rate(int(counts[e, step]), n_eligible)]
        for e, eps in enumerate(records.eps)
        for step in range(counts.shape[1])
    ]
    return Table(["eps", "iteration", "n_eligible", "n_fooled", "success_rate"], rows)


def confidence_bins_table(records: StudyRecords, bins: ConfidenceBins) -> Table:
    """Fig. 3c: success rate after ``max_iter`` steps per clean-confidence bin, for each eps.

    ``n_eligible`` counts the eligible images whose clean confidence falls in the bin.
    """
    index = torch.where(records.eligible, bins.assign(records.clean_confidence), -1)
    edges = bins.edges().tolist()
    rows = []
    for e, eps in enumerate(records.eps):
        final = records.fooled[e, -1]
        for b in range(bins.n):
            in_bin = index == b
            n_eligible, n_fooled = int(in_bin.sum()), int(final[in_bin].sum())
            rows.append([eps, b, edges[b], edges[b + 1], n_eligible, n_fooled, _rate(n_fooled, n_eligible)])
    return Table(["eps", "bin", "conf_low", "conf_high", "n_eligible", "n_fooled", "success_rate"], rows)


@dataclass(frozen=True)
class StudyResult:
    records: StudyRecords
    tables: dict[str, Table]  # name -> table, written as <name>.csv
    figures: dict[str, Path]  # logger key -> PNG
    summary: dict[str, Any]


def run_study(
    model: nn.Module,
    loader: Iterable,
    settings: StudySettings,
    output_dir: str | Path,
    loggers: Sequence = (),
    device: torch.device | str | None = None,
) -> StudyResult:
    """Attack, then write ``eps_sweep.csv``, ``iterations.csv``, ``confidence_bins.csv``, the
    Fig. 3a-c PNGs and ``summary.json`` into ``output_dir`` (each file atomically), and log
    the tables and figures to ``loggers``."""
    output_dir = Path(output_dir)
    records = attack_records(model, loader, settings, device)
    bins = settings.confidence_bins
    tables = {
        "eps_sweep": eps_sweep_table(records),
        "iterations": iterations_table(records),
        "confidence_bins": confidence_bins_table(records, bins),
    }
    for name, table in tables.items():
        write_csv(output_dir / f"{name}.csv", table)
        log_table(loggers, f"study/{name}", table.columns, table.rows)

    eligible = records.eligible
    n_below = int((eligible & (bins.assign(records.clean_confidence) < 0)).sum())
    sweep = tables["eps_sweep"]
    figures = {
        "study/success_vs_eps": plot_success_vs_eps(
            {"PGD": ([r[0] for r in sweep.rows], [r[-1] for r in sweep.rows])},
            output_dir / "fig3a_success_vs_eps.png",
            f"Attack success vs epsilon (PGD-{settings.max_iter})",
        ),
        "study/success_vs_iterations": plot_success_vs_iterations(
            tables["iterations"], output_dir / "fig3b_success_vs_iterations.png"
        ),
        "study/success_vs_confidence": plot_success_vs_confidence(
            tables["confidence_bins"], bins, n_below, output_dir / "fig3c_success_vs_confidence.png"
        ),
    }
    for key, path in figures.items():
        log_image(loggers, key, path)

    summary = {
        "settings": {
            "eps": list(settings.eps),
            "alpha": list(records.alpha),
            "max_iter": settings.max_iter,
            "random_start": settings.random_start,
            "seed": settings.seed,
            "max_images": settings.max_images,
            "confidence_bins": {"low": bins.low, "high": bins.high, "n": bins.n},
        },
        "n_images": len(records.labels),
        "n_eligible": int(eligible.sum()),
        "n_natively_misclassified": int((~eligible).sum()),
        "n_eligible_below_confidence_bins": n_below,
        "success_rate": {f"{row[0]:g}": row[-1] for row in sweep.rows},
        "notes": [
            "success rates count only images classified correctly before the attack",
            f"eligible images with clean confidence below {bins.low:g} (or above {bins.high:g}) "
            "are in no confidence bin; they still count in the eps and iterations tables",
        ],
    }
    write_json(output_dir / "summary.json", summary)
    return StudyResult(records, tables, figures, summary)


def run_pgd_study(
    module: nn.Module,
    datamodule,
    study_cfg: StudySettings | Mapping | DictConfig,
    output_dir: str | Path,
    loggers: Sequence = (),
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """The study of ``module`` (eval mode, e.g. ``load_classifier(best.ckpt)``) on the test split
    of ``datamodule``; returns ``{"study/success_rate/eps=<eps>": rate}``.

    A module that records ``num_classes`` (ClassifierModule) must match the data's.
    """
    settings = StudySettings.from_config(study_cfg)
    hparams = getattr(module, "hparams", None) or {}
    if "num_classes" in hparams and hparams["num_classes"] != datamodule.num_classes:
        raise ValueError(
            f"the classifier was trained with num_classes={hparams['num_classes']} but the data has "
            f"num_classes={datamodule.num_classes}: run the study on the data it was trained on (data=...)"
        )
    datamodule.setup("test")
    loader: DataLoader = datamodule.test_dataloader()
    result = run_study(module, loader, settings, output_dir, loggers, device)
    return {f"study/success_rate/eps={eps}": rate for eps, rate in result.summary["success_rate"].items()}
