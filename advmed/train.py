"""Train a model, then test it clean and under the configured attack.

    python -m advmed.train experiment=demo
    python -m advmed.train -m experiment=demo attack.eps=0.02,0.05
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from advmed.attacks import build_attack
from advmed.models import load_classifier
from advmed.studies.pgd_study import StudySettings, run_pgd_study
from advmed.studies.robustness_report import write_report
from advmed.utils.files import write_json
from advmed.utils.resolvers import register_resolvers
from advmed.utils.run import build_trainer, finish_loggers, output_dir, seed_run

register_resolvers()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint, write metrics.json (and report.md when attacked); return metrics.

    With a ``study`` node (conf/experiment/pgd_study/*) the PGD attack-success study of the best
    checkpoint runs after fit and writes into ``<run dir>/pgd_study``.
    """
    # Check everything the config describes before training, so that a typo costs no fit and
    # a failed run leaves no logger files behind.
    study = StudySettings.from_config(cfg.study) if cfg.get("study") else None
    seed_run(cfg)
    datamodule = instantiate(cfg.data)
    model = instantiate(
        cfg.model,
        train_attack=build_attack(cfg.get("train_attack")),
        test_attack=build_attack(cfg.get("attack")),
        _recursive_=False,  # optimizer/scheduler stay configs; the module builds them
    )
    trainer = build_trainer(cfg)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if study is not None:
            studied = load_classifier(best, datamodule.num_classes, datamodule.in_channels) if best else model
            metrics.update(run_pgd_study(studied, datamodule, study, output_dir(cfg) / "pgd_study", trainer.loggers,
                                         device=trainer.strategy.root_device))
        if cfg.get("test"):
            metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=best or None)[0])
            attack_cfg = OmegaConf.to_container(cfg.attack, resolve=True) if cfg.get("attack") else None
            write_report(output_dir(cfg), metrics, attack_cfg, best, cfg.data._target_.rsplit(".", 1)[-1])
        else:
            write_json(output_dir(cfg) / "metrics.json", {"metrics": metrics, "ckpt_path": best})
        print(f"best checkpoint: {best}")
        return metrics
    finally:
        finish_loggers(trainer.loggers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
