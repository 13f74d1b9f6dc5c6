"""Test a trained checkpoint (any advmed module) clean and under an attack; write report.md and a PNG grid.

    python -m advmed.evaluate ckpt_path=outputs/.../checkpoints/best.ckpt attack=pgd attack.eps=0.03
    python -m advmed.evaluate ckpt_path=... data=hcd data.root=/data/hcd attack=snap
    python -m advmed.evaluate ckpt_path=... suite=card     # the robustness card (advmed/studies/card/)
"""

from __future__ import annotations

from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from advmed.attacks import build_attack
from advmed.models import load_module
from advmed.studies.card import run_card
from advmed.studies.robustness_report import write_report
from advmed.utils.job_status import record_job_status
from advmed.utils.library_noise import quiet_library_noise
from advmed.utils.resolvers import register_resolvers
from advmed.utils.run import (
    build_trainer,
    check_required,
    data_name,
    finish_loggers,
    output_dir,
    plain,
    run_metrics,
    seed_run,
)

register_resolvers()
quiet_library_noise()


# suite=<name>: a whole evaluation of the checkpoint instead of one attack (conf/suite/<name>.yaml).
SUITES = {"card": run_card}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test ``cfg.ckpt_path`` on the data's test split, clean and under ``cfg.attack``; with
    ``suite=<name>``, run that suite instead (``card``: :func:`advmed.studies.card.run_card`)."""
    if cfg.get("suite"):
        return SUITES[cfg.suite.name](cfg)
    check_required(cfg)
    datamodule = instantiate(cfg.data)
    attack = build_attack(cfg.get("attack"))
    module = load_module(cfg.ckpt_path, datamodule=datamodule)
    module.test_attack = attack
    seed_run(cfg)  # the attack's random start
    trainer = build_trainer(cfg)
    try:
        trainer.test(module, datamodule=datamodule)
        metrics = run_metrics(trainer)
        if trainer.is_global_zero:  # under DDP every rank gets here; the report is written once
            notes = attack.report_notes(metrics) if attack is not None else []
            report = write_report(
                output_dir(cfg), metrics, plain(cfg.get("attack")), str(cfg.ckpt_path), data_name(cfg), notes=notes
            )
            print(report.read_text())
            print(f"report written to {report}")
        return metrics
    finally:
        finish_loggers(trainer.loggers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@record_job_status
def main(cfg: DictConfig) -> dict[str, Any]:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
