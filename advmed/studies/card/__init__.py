"""The robustness card (``python -m advmed.evaluate ckpt_path=... suite=card``): clean, every
corruption of the data's modality at severities 1-5, the stain shifts (H&E data) and the
adversarial suite at a list of eps, measured on one loaded checkpoint and data, resumable per
condition, written as card.json (schema in :mod:`.report`), card.md and plots."""

from __future__ import annotations

from typing import Any


def run_card(cfg: Any) -> dict[str, float]:
    """:func:`advmed.studies.card.runner.run_card` (imported on use: ``advmed.collect`` reads cards
    through :mod:`.summary` without loading models, attacks and corruptions)."""
    from advmed.studies.card.runner import run_card as run

    return run(cfg)


__all__ = ["run_card"]
