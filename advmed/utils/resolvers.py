"""OmegaConf resolvers used by the config tree (registered once, on import of an entry point)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """W&B runs offline unless the user has credentials or asked for online mode explicitly."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    return not (mode == "online" or os.environ.get("WANDB_API_KEY"))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("advmed.wandb_offline"):
        OmegaConf.register_new_resolver("advmed.wandb_offline", wandb_offline)
