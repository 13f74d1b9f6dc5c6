"""Pieces every Hydra entry point shares: seeding, trainer/logger set-up, config logging, clean exit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from advmed.utils.instantiate import instantiate_callbacks, instantiate_loggers


def seed_run(cfg: DictConfig) -> None:
    """Seed Python, NumPy and torch (and dataloader workers) from ``cfg.seed``: CPU runs repeat exactly."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Build the Trainer with the configured callbacks and loggers.

    Entry points call this after the data, model and attack configs have been checked, so a bad
    config fails before a logger writes anything. The fully resolved config is attached to every
    logger (W&B shows it as the run config).
    """
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg.get("callbacks")), logger=loggers or False)
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)
    return trainer


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so the next job of a sequential multirun starts its own run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)
