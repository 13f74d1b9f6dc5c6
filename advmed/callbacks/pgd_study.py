"""Run the PGD attack-success study on the best checkpoint when fitting ends (experiment=pgd_study/*)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from advmed.models.checkpoint import load_module
from advmed.studies.pgd_study import run_pgd_study
from advmed.studies.pgd_study_settings import StudySettings


class PGDStudyCallback(L.Callback):
    """After ``fit``, the PGD study (success vs eps, iterations, confidence; Fig. 3a-c) of the best
    checkpoint (the final weights when none was saved), written to ``output_dir``.

    The settings are checked when the callback is built, before any training. The success
    rates are kept in :attr:`metrics` (``study/success_rate/eps=<eps>``, and
    ``study/apgd_success_rate/eps=<eps>`` unless ``study.apgd=false``), which the entry points
    add to the run's ``metrics.json``. Runs on rank 0 only.
    """

    def __init__(self, settings, output_dir: str | Path) -> None:
        super().__init__()
        self.settings = StudySettings.from_config(settings)
        self.output_dir = Path(output_dir)
        self.metrics: dict[str, float] = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        studied = load_module(best, type(pl_module)) if best else pl_module
        self.metrics = run_pgd_study(
            studied, trainer.datamodule, self.settings, self.output_dir, trainer.loggers,
            device=trainer.strategy.root_device,
        )
