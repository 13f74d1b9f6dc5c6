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

The stronger attack beside it (``study.apgd``, on by default): APGD-CE (Croce & Hein 2020) with
``steps = max_iter``, one restart, the same eps, random-start switch and seed, on the same
images, counted over the same eligible images: ``apgd_success_rate`` in ``eps_sweep.csv``, a
dashed line in Fig. 3a, ``apgd_success_rate`` in ``summary.json``. At equal iterations it shows
whether PGD's curve measures the model or the attack (DESIGN.md, contract 11). It costs one more
attack per eps, at most as many passes as the PGD run (a fooled image leaves APGD: the study counts
nothing else); ``study.apgd=false`` leaves it out.

Step size: ``alpha: null`` uses PGD's rule ``alpha = 2.5 * eps / max_iter`` (Madry et al.:
``max_iter`` steps can cross the eps-ball 2.5 times, so the last iterations can still reach
its corners). Point i of the iterations curve is then PGD-i with that same step, not with
its own ``2.5 * eps / i``. The paper used one fixed step for every eps: set ``alpha``.

This module runs the study and writes its outputs; the parts live beside it: the settings in
:mod:`~advmed.studies.pgd_study_settings`, the attacks in :mod:`~advmed.studies.pgd_study_records`,
the tables in :mod:`~advmed.studies.pgd_study_tables`, the figures in
:mod:`~advmed.studies.pgd_study_figures`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from advmed.studies.pgd_study_figures import (
    plot_success_vs_confidence,
    plot_success_vs_eps,
    plot_success_vs_iterations,
)
from advmed.studies.pgd_study_records import StudyRecords, attack_records
from advmed.studies.pgd_study_settings import StudySettings
from advmed.studies.pgd_study_tables import confidence_bins_table, eps_sweep_table, iterations_table
from advmed.utils.files import write_json
from advmed.utils.loggers import log_image, log_table
from advmed.utils.tables import Table, write_csv


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
    the tables and figures to ``loggers``. With ``settings.apgd`` the eps sweep, Fig. 3a and the
    summary carry APGD-CE's success rate beside PGD's."""
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
    k = settings.max_iter
    eps_axis, rates = sweep.column("eps"), sweep.column("success_rate")
    apgd_rates = sweep.column("apgd_success_rate") if settings.apgd else None
    pgd_label, apgd_label = f"PGD-{k}", f"APGD-CE-{k}"
    series = {pgd_label: (eps_axis, rates)}
    if apgd_rates is not None:
        series[apgd_label] = (eps_axis, apgd_rates)
    figures = {
        "study/success_vs_eps": plot_success_vs_eps(
            series,
            output_dir / "fig3a_success_vs_eps.png",
            f"Attack success vs epsilon (L-inf, {k} iterations, 1 run each)",
            styles={apgd_label: {"linestyle": "--", "marker": "s", "fillstyle": "none"}},
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
            "apgd": settings.apgd,
        },
        "attacks": _attack_names(settings),
        "n_images": len(records.labels),
        "n_eligible": int(eligible.sum()),
        "n_natively_misclassified": int((~eligible).sum()),
        "n_eligible_below_confidence_bins": n_below,
        "success_rate": dict(zip((f"{eps:g}" for eps in eps_axis), rates)),
        **({"apgd_success_rate": dict(zip((f"{eps:g}" for eps in eps_axis), apgd_rates))} if settings.apgd else {}),
        "notes": [
            "success rates count only images classified correctly before the attack",
            f"eligible images with clean confidence below {bins.low:g} (or above {bins.high:g}) "
            "are in no confidence bin; they still count in the eps and iterations tables",
            *([f"apgd_success_rate: {apgd_label} on the same images, counted over the same eligible images "
               f"as PGD's success_rate; the iterations and confidence tables are PGD's only"] if settings.apgd else []),
        ],
    }
    write_json(output_dir / "summary.json", summary)
    return StudyResult(records, tables, figures, summary)


def _attack_names(settings: StudySettings) -> dict[str, str]:
    """What made each success rate (DESIGN.md, contract 11: attack, norm, iterations, restarts)."""
    k, start = settings.max_iter, "random start" if settings.random_start else "no random start"
    names = {"success_rate": f"PGD-{k}, L-inf, constant step (settings.alpha, one per eps), {start}, 1 run"}
    if settings.apgd:
        names["apgd_success_rate"] = (
            f"APGD-CE-{k} (Croce & Hein 2020), L-inf, adaptive step from 2 eps, momentum 0.75, {start}, 1 restart")
    return names


def run_pgd_study(
    module: nn.Module,
    datamodule,
    study_cfg: StudySettings | Mapping | DictConfig,
    output_dir: str | Path,
    loggers: Sequence = (),
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """The study of ``module`` (eval mode, e.g. ``load_classifier(best.ckpt)``) on the test split
    of ``datamodule``; returns ``{"study/success_rate/eps=<eps>": rate}`` (PGD) and, with APGD,
    ``{"study/apgd_success_rate/eps=<eps>": rate}``.

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
    return {
        f"study/{key}/eps={eps}": rate
        for key in ("success_rate", "apgd_success_rate")
        for eps, rate in result.summary.get(key, {}).items()
    }
