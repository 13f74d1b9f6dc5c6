"""card.json (one documented schema), card.md and the plots of a robustness card.

card.json, schema ``advmed.card/1``::

    schema        "advmed.card/1"
    model         {ckpt_path, ckpt_sha256, module, task}
    data          {name, modality, stain, split, config}
    seed          the card's seed (every condition starts from it; shifts seed batch b with seed + b)
    metrics       the condition metrics: classification acc, balanced_acc; segmentation dice, iou, pixel_acc
    not_measured  [{id, reason}]: shift conditions the images are too small for (listed, never dropped silently)
    conditions    one entry per condition, in run order:
                  {id, kind (clean | corruption | stain | attack), name, severity (1-5 or null),
                   eps (or null), settings (attack config / shift), metrics {name: value}, n (images),
                   seed, time_s, notes [attack remarks, e.g. AutoAttack's substitutions], logged {test/*}}
    summary       clean, corruption_mean, per_corruption, worst_corruption, balanced_error
                  (classification: MedMNIST-C's BE / rBE, unnormalised), stain_mean, per_stain,
                  robust {attack: {eps: metric}}, robust_worst {eps: min over attacks}
    provenance    {advmed_version, git_commit, date, command, total_time_s}

``advmed.collect`` reads card.json files (one folder of cards -> one comparison table).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from advmed.data.writers import code_version
from advmed.studies.card.plots import plot_card
from advmed.studies.card.summary import finite, primary_metric, summarise
from advmed.utils.files import write_json, write_text
from advmed.utils.loggers import markdown_table

SCHEMA = "advmed.card/1"


def _clean_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return finite(value)


def build_card(header: dict[str, Any], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    task = header["task"]
    identity = header["identity"]
    conditions = [{k: r.get(k) for k in ("id", "kind", "name", "severity", "eps", "settings", "metrics", "n", "seed",
                                         "time_s", "notes", "logged")} for r in results]
    card = {
        "schema": SCHEMA,
        "model": {"ckpt_path": header["ckpt_path"], "ckpt_sha256": identity["ckpt_sha256"], "module": header["module"],
                  "task": task},
        "data": {"name": header["data"], "modality": header["modality"], "stain": header["stain"],
                 "split": identity["split"], "config": identity["data"]},
        "seed": identity["seed"],
        "metrics": list(results[0]["metrics"]) if results else [],
        "conditions": conditions,
        "not_measured": header.get("not_measured", []),
        "summary": summarise(task, results),
        "provenance": {**code_version(), "date": dt.datetime.now().isoformat(timespec="seconds"),
                       "command": " ".join(sys.argv), "total_time_s": round(sum(r["time_s"] for r in results), 3)},
    }
    return _clean_json(card)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """card.md: what was measured, the summary, then one table per kind of condition."""
    metric = primary_metric(card["model"]["task"])
    s = card["summary"]
    n = next((c["n"] for c in card["conditions"] if c["kind"] == "clean"), None)
    lines = [f"# Robustness card: {card['model']['module']} on {card['data']['name']}", "",
             f"Checkpoint `{card['model']['ckpt_path']}` (sha256 {card['model']['ckpt_sha256'][:12]}), "
             f"{card['data']['split']} split ({n} images), modality {card['data']['modality']}, seed {card['seed']}; "
             f"advmed {card['provenance']['advmed_version']} at commit {card['provenance']['git_commit']}, "
             f"{card['provenance']['date']}.", "", "## Summary", ""]
    rows = [["clean", *(s["clean"].get(m) for m in card["metrics"])]] if s.get("clean") else []
    if "corruption_mean" in s:
        rows.append(["mean under corruption", *(s["corruption_mean"].get(m) for m in card["metrics"])])
    if "stain_mean" in s:
        rows.append(["mean under stain shift", *(s["stain_mean"].get(m) for m in card["metrics"])])
    lines += [markdown_table(["condition", *card["metrics"]], [[r[0], *(_fmt(v) for v in r[1:])] for r in rows]), ""]
    if "worst_corruption" in s:
        w = s["worst_corruption"]
        lines.append(f"Worst corruption: **{w['name']}** ({metric} {_fmt(w[metric])} over its severities, "
                     f"{_fmt(w['at_severity_5'])} at severity 5).")
    if "balanced_error" in s and s["balanced_error"]:
        be = s["balanced_error"]
        lines.append(f"MedMNIST-C balanced error BE {be['be']:.4f}, relative rBE {be['rbe']:.4f} (clean balanced error "
                     f"{be['clean_error']:.4f}; not normalised by the paper's AlexNet baseline, which exists only for "
                     "the MedMNIST sets).")
    if "robust_worst" in s:
        lines.append("Robust " + metric + " (worst over the attacks) at eps " + ", ".join(
            f"{e}: {_fmt(v)}" for e, v in s["robust_worst"].items()) + ".")
    for kind, title in (("corruption", "Corruptions"), ("stain", "Stain shifts")):
        table: dict[str, dict[int, float]] = {}
        for c in card["conditions"]:
            if c["kind"] == kind:
                table.setdefault(c["name"], {})[c["severity"]] = c["metrics"][metric]
        if table:
            severities = sorted({sev for per in table.values() for sev in per})
            rows = [[name, *(_fmt(per.get(sev)) for sev in severities),
                     _fmt(sum(per.values()) / len(per))] for name, per in table.items()]
            lines += ["", f"## {title} ({metric} by severity)", "",
                      markdown_table(["shift", *(str(sev) for sev in severities), "mean"], rows)]
    if card.get("not_measured"):
        lines += ["", "Not measured: " + "; ".join(f"{m['id']} ({m['reason']})" for m in card["not_measured"]) +
                  ". The means above are over the measured conditions only."]
    attacks = [c for c in card["conditions"] if c["kind"] == "attack"]
    if attacks:
        eps_values = sorted({c["eps"] for c in attacks})
        per: dict[str, dict[float, float]] = {}
        for c in attacks:
            per.setdefault(c["name"], {})[c["eps"]] = c["metrics"][metric]
        rows = [[name, *(_fmt(v.get(e)) for e in eps_values)] for name, v in per.items()]
        lines += ["", f"## Attacks ({metric} by eps)", "", markdown_table(["attack", *(f"{e:.4g}" for e in eps_values)], rows)]
        described = {}
        for c in attacks:
            settings = {k: v for k, v in c["settings"].items() if v is not None and k in (
                "steps", "n_queries", "n_target_classes", "version", "norm", "restarts", "alpha", "random_start")}
            described[c["name"]] = ", ".join(f"{k}={v}" for k, v in settings.items())
        lines += [""] + [f"- {name}: {text}" for name, text in described.items() if text]
        notes = sorted({note for c in attacks for note in c.get("notes") or []})
        lines += [f"- note: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_card(out: Path, header: dict[str, Any], results: Sequence[dict[str, Any]],
               suite: dict[str, Any]) -> tuple[dict[str, Any], list[Path]]:
    """Write card.json, card.md and the plots into ``out``; return the card and the paths."""
    card = build_card(header, results)
    paths = [write_json(out / "card.json", card), write_text(out / "card.md", card_markdown(card))]
    paths += plot_card(card, out)
    return card, paths
