"""Build callbacks and loggers from their config groups (dicts of ``_target_`` entries)."""

from __future__ import annotations

from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def _instantiate_group(cfg: DictConfig | None) -> list:
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if entry and "_target_" in entry]


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_group(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_group(cfg)
