"""Evaluate a trained classifier clean and under an attack; write report.md and a PNG grid.

    python -m advmed.evaluate ckpt_path=outputs/.../checkpoints/best.ckpt attack=pgd attack.eps=0.03
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from advmed.attacks import build_attack
from advmed.models import load_classifier
from advmed.studies.robustness_report import write_report
from advmed.utils.resolvers import register_resolvers
from advmed.utils.run import build_trainer, finish_loggers, output_dir, seed_run

register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on the data's test split, clean and under ``cfg.attack``."""
    datamodule = instantiate(cfg.data)
    module = load_classifier(cfg.ckpt_path, num_classes=datamodule.num_classes, in_channels=datamodule.in_channels)
    module.test_attack = build_attack(cfg.get("attack"))
    seed_run(cfg)  # the attack's random start
    trainer = build_trainer(cfg)
    try:
        metrics = trainer.test(module, datamodule=datamodule)[0]
        attack_cfg = OmegaConf.to_container(cfg.attack, resolve=True) if cfg.get("attack") else None
        report = write_report(output_dir(cfg), metrics, attack_cfg, str(cfg.ckpt_path), cfg.data._target_.rsplit(".", 1)[-1])
        print(report.read_text())
        print(f"report written to {report}")
        return metrics
    finally:
        finish_loggers(trainer.loggers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
