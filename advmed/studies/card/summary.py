"""The summary numbers of a card, computed from its condition results (plain dicts as stored):
clean, mean under corruption, MedMNIST-C's balanced error, the worst corruption, the stain-shift
mean and the robust figure of each attack at each eps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean
from typing import Any


def primary_metric(task: str) -> str:
    """The metric a card's plots and rankings use: accuracy, or mean Dice for segmentation."""
    return "acc" if task == "classification" else "dice"


def _by_kind(results: Sequence[dict[str, Any]], kind: str) -> dict[str, dict[int, dict[str, float]]]:
    """``{name: {severity: metrics}}`` of the shift conditions of ``kind``."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    for r in results:
        if r["kind"] == kind:
            table.setdefault(r["name"], {})[int(r["severity"])] = r["metrics"]
    return table


def _mean_over(table: dict[str, dict[int, dict[str, float]]], metric: str) -> dict[str, float]:
    return {name: fmean(m[metric] for m in sev.values()) for name, sev in table.items()}


def balanced_error(clean: dict[str, float], corruptions: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """MedMNIST-C's balanced error (Di Salvo et al. 2024, sec. 4): per corruption the mean over the
    severities of 1 - balanced accuracy (BE_c), its mean over the corruptions (BE), and the relative
    form (rBE: BE_c - the clean balanced error, averaged). The paper then divides both by an AlexNet
    baseline's of the same MedMNIST set; that baseline exists only for the MedMNIST sets at their
    sizes, so the card reports the unnormalised values and says so."""
    per = {name: fmean(1.0 - m["balanced_acc"] for m in sev.values()) for name, sev in corruptions.items()}
    if not per:
        return {}
    clean_error = 1.0 - clean["balanced_acc"]
    return {"per_corruption": per, "be": fmean(per.values()), "rbe": fmean(v - clean_error for v in per.values()),
            "clean_error": clean_error, "normalised": False}


def summarise(task: str, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``summary`` block of card.json."""
    metric = primary_metric(task)
    clean = next((r["metrics"] for r in results if r["kind"] == "clean"), None)
    summary: dict[str, Any] = {"metric": metric, "clean": clean}
    corruptions = _by_kind(results, "corruption")
    if corruptions:
        names = list(corruptions)
        metrics = list(next(iter(next(iter(corruptions.values())).values())))
        summary["corruption_mean"] = {m: fmean(v for sev in corruptions.values() for v in (x[m] for x in sev.values()))
                                      for m in metrics}
        means = _mean_over(corruptions, metric)
        worst = min(names, key=lambda n: means[n])
        summary["worst_corruption"] = {"name": worst, metric: means[worst],
                                       "at_severity_5": corruptions[worst].get(5, {}).get(metric)}
        summary["per_corruption"] = means
        if task == "classification" and clean is not None and "balanced_acc" in clean:
            summary["balanced_error"] = balanced_error(clean, corruptions)
    stains = _by_kind(results, "stain")
    if stains:
        summary["stain_mean"] = {m: fmean(x[m] for sev in stains.values() for x in sev.values())
                                 for m in next(iter(next(iter(stains.values())).values()))}
        summary["per_stain"] = _mean_over(stains, metric)
    robust: dict[str, dict[str, float]] = {}
    for r in results:
        if r["kind"] == "attack":
            robust.setdefault(r["name"], {})[f"{r['eps']:.7g}"] = r["metrics"][metric]
    if robust:
        summary["robust"] = robust
        # the pointwise worst case over the attacks at each eps: what a sceptical reader takes as the robust figure
        eps_values = sorted({e for per in robust.values() for e in per}, key=float)
        summary["robust_worst"] = {e: min(per[e] for per in robust.values() if e in per) for e in eps_values}
    return summary


def finite(value: Any) -> Any:
    """JSON has no NaN: a metric that could not be computed is stored as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def card_metrics(card: dict[str, Any]) -> dict[str, float]:
    """The card's summary as flat ``card/...`` metrics: what ``advmed.evaluate suite=card`` returns
    and ``advmed.collect`` tabulates, so a sweep of checkpoints compares as one table, e.g.
    ``card/clean/acc``, ``card/corruption_mean/acc``, ``card/worst_corruption/acc``, ``card/be``,
    ``card/stain_mean/acc``, ``card/pgd/eps=0.03137255``, ``card/robust_worst/eps=0.03137255``."""
    s = card.get("summary") or {}
    flat: dict[str, Any] = {}
    for block in ("clean", "corruption_mean", "stain_mean"):
        for metric, value in (s.get(block) or {}).items():
            flat[f"card/{block}/{metric}"] = value
    if "worst_corruption" in s:
        flat[f"card/worst_corruption/{s['metric']}"] = s["worst_corruption"][s["metric"]]
    if s.get("balanced_error"):
        flat["card/be"], flat["card/rbe"] = s["balanced_error"]["be"], s["balanced_error"]["rbe"]
    for attack, per in (s.get("robust") or {}).items():
        flat.update({f"card/{attack}/eps={eps}": v for eps, v in per.items()})
    flat.update({f"card/robust_worst/eps={eps}": v for eps, v in (s.get("robust_worst") or {}).items()})
    return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}
