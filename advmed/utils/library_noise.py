"""Silence the few messages of our libraries that say nothing to an advmed user, and only those.

Every entry point calls :func:`quiet_library_noise` once. It drops exactly:

- Lightning's advertising lines ("Tip: ... litlogger" / "... litmodels"), logged at INFO on every
  ``Trainer`` set-up;
- the ``FutureWarning`` torch raises for ``isinstance(treespec, LeafSpec)`` inside Lightning's own
  ``_pytree`` helper (Lightning's code, not ours: nothing a user can change);

and :func:`drop_unset_wandb_anonymous` removes the cause of W&B's "The anonymous setting has no
effect" warning: Lightning's ``WandbLogger`` passes ``anonymous=None`` to ``wandb.init`` even when
it was never set, which W&B then warns about. Every other warning and log line stays.
"""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.loggers import WandbLogger

# The loggers Lightning's rank_zero_info writes through (lightning.pytorch and lightning_fabric).
_LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
_TIP_PREFIX = "💡 Tip:"
_PYTREE_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIP_PREFIX)


_TIP_FILTER = _DropLightningTips()


def quiet_library_noise() -> None:
    """Install the filters described in the module docstring (idempotent)."""
    for name in _LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
    warnings.filterwarnings("ignore", message=_PYTREE_WARNING, category=FutureWarning)


def drop_unset_wandb_anonymous(logger: object) -> None:
    """Remove ``anonymous=None`` from a ``WandbLogger``'s ``wandb.init`` arguments (see the module
    docstring); a value the user set is kept."""
    init = getattr(logger, "_wandb_init", None) if isinstance(logger, WandbLogger) else None
    if isinstance(init, dict) and "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]
