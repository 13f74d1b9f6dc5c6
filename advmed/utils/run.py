"""Pieces every Hydra entry point shares: seeding, trainer/logger set-up, config logging, run
metrics, clean exit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, ListConfig, OmegaConf

from advmed.utils.library_noise import drop_unset_wandb_anonymous
from advmed.utils.wandb_fallback import start_or_fall_back


def _entries(cfg: DictConfig | None) -> list:
    return [entry for entry in (cfg or {}).values() if entry and "_target_" in entry]


def instantiate_group(cfg: DictConfig | None) -> list:
    """The objects of a group of named ``_target_`` entries (``callbacks:``, ``logger:``); none for null."""
    return [instantiate(entry) for entry in _entries(cfg)]


def check_required(cfg: DictConfig) -> None:
    """Raise one clear error naming every mandatory value (``???``) the run leaves unset, before
    anything is built (OmegaConf would otherwise fail later at the first use, e.g. "Missing value at index 0")."""
    def unset(node, prefix: str):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from unset(value, f"{prefix}{key}.")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from unset(value, f"{prefix}{i}.")
        elif node == "???":
            yield prefix[:-1]

    # Unresolved: a missing value reached through an interpolation is reported under its own name.
    raw = OmegaConf.to_container(cfg, resolve=False)
    missing = sorted(key for key in unset(raw, "") if not key.startswith("hydra."))
    if missing:
        raise ValueError(
            f"required config value(s) not set: {', '.join(missing)}; give them on the command line, e.g. "
            + " ".join(f"{key}=..." for key in missing)
        )


def seed_run(cfg: DictConfig) -> None:
    """Seed Python, NumPy and torch (and dataloader workers) from ``cfg.seed``: CPU runs repeat exactly."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Build the Trainer with the configured callbacks and loggers.

    Entry points call this after the data, model and attack configs have been checked, and the
    callbacks (which check their own settings) are built before the loggers, so a bad config
    fails before a logger writes anything. The fully resolved config is attached to every
    logger (W&B shows it as the run config).
    """
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    for logger in loggers:
        drop_unset_wandb_anonymous(logger)
    loggers = [
        start_or_fall_back(entry, logger) if isinstance(logger, WandbLogger) else logger
        for entry, logger in zip(_entries(cfg.get("logger")), loggers)
    ]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)
    return trainer


def run_metrics(trainer: L.Trainer, metrics: dict[str, float] | None = None) -> dict[str, float]:
    """``metrics`` updated with the trainer's logged metrics and the ``metrics`` dict of every
    callback that keeps one (studies run by callbacks report their figures this way)."""
    merged = dict(metrics or {})
    merged.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    for callback in trainer.callbacks:
        merged.update(getattr(callback, "metrics", None) or {})
    return merged


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so the next job of a sequential multirun starts its own run."""
    for logger in loggers:
        # `_experiment`, not `.experiment`: reading the property would start a run only to end it.
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def data_name(cfg: DictConfig) -> str:
    """The data module's class name, for reports."""
    return str(cfg.data._target_).rsplit(".", 1)[-1]


def plain(value: Any) -> Any:
    """A resolved plain container of an OmegaConf node (None stays None)."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
