"""PGD attack-success study of a trained classifier (the PGD study's Fig. 3a-c): success rate
vs eps, vs iterations and vs clean confidence, written as CSV tables and PNG plots.

    python -m advmed.study ckpt_path=<run dir>/checkpoints/best.ckpt
    python -m advmed.study ckpt_path=... data=nct_crc_he study.eps=[0.02,0.04] study.max_iter=20

Fig. 3d (vs training-set size) retrains: see conf/experiment/pgd_study/train_size.yaml.
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from advmed.models import ClassifierModule, load_module
from advmed.studies.pgd_study import run_pgd_study
from advmed.studies.pgd_study_settings import StudySettings
from advmed.utils.job_status import record_job_status
from advmed.utils.library_noise import quiet_library_noise
from advmed.utils.loggers import markdown_table
from advmed.utils.resolvers import register_resolvers
from advmed.utils.run import build_trainer, finish_loggers, output_dir, seed_run

register_resolvers()
quiet_library_noise()

__all__ = ["run_pgd_study", "study"]


def success_table(metrics: dict[str, float]) -> str:
    """The success rates of :func:`run_pgd_study` as a markdown table: eps, PGD[, APGD-CE]."""
    pgd = {k.rsplit("=", 1)[1]: v for k, v in metrics.items() if k.startswith("study/success_rate/")}
    apgd = {k.rsplit("=", 1)[1]: v for k, v in metrics.items() if k.startswith("study/apgd_success_rate/")}
    if not apgd:
        return markdown_table(["eps", "attack success rate (PGD)"], [[eps, rate] for eps, rate in pgd.items()])
    return markdown_table(["eps", "PGD success rate", "APGD-CE success rate"],
                          [[eps, rate, apgd.get(eps)] for eps, rate in pgd.items()])


def study(cfg: DictConfig) -> dict[str, float]:
    """Run the study of ``cfg.ckpt_path`` on the test split of ``cfg.data``; return the success rates."""
    settings = StudySettings.from_config(cfg.study)  # bad settings fail before anything loads
    datamodule = instantiate(cfg.data)
    module = load_module(cfg.ckpt_path, ClassifierModule, datamodule)
    seed_run(cfg)
    # The trainer is never fitted: it builds the loggers and picks the device (trainer=gpu, ...).
    trainer = build_trainer(cfg)
    try:
        out = output_dir(cfg)
        metrics = run_pgd_study(module, datamodule, settings, out, trainer.loggers, device=trainer.strategy.root_device)
        print(success_table(metrics))
        print(f"tables and figures written to {out}")
        return metrics
    finally:
        finish_loggers(trainer.loggers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="study")
@record_job_status
def main(cfg: DictConfig) -> dict[str, float]:
    return study(cfg)


if __name__ == "__main__":
    main()
