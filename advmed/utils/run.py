"""Pieces every Hydra entry point shares: seeding, trainer/logger set-up, config logging, clean exit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf


def instantiate_group(cfg: DictConfig | None) -> list:
    """The objects of a group of named ``_target_`` entries (``callbacks:``, ``logger:``); none for null."""
    return [instantiate(entry) for entry in (cfg or {}).values() if entry and "_target_" in entry]


def seed_run(cfg: DictConfig) -> None:
    """Seed Python, NumPy and torch (and dataloader workers) from ``cfg.seed``: CPU runs repeat exactly."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Build the Trainer with the configured callbacks and loggers.

    Entry points call this after the data, model and attack configs have been checked, so a bad
    config fails before a logger writes anything. The fully resolved config is attached to every
    logger (W&B shows it as the run config).
    """
    loggers = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=loggers or False)
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)
    return trainer


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so the next job of a sequential multirun starts its own run."""
    for logger in loggers:
        # `_experiment`, not `.experiment`: reading the property would start a run only to end it.
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)
