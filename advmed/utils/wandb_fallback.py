"""W&B that never stops a run: when the server cannot be reached or refuses the credentials, the
run logs offline into ``<run dir>/wandb`` and can be pushed later with ``wandb sync``.

``wandb.init`` in online mode retries for minutes and then raises, which would end a training job
on a cluster node without internet (common) before its first step. So the logger's run is
started before training: first a quick TCP check of the server, then ``wandb.init`` itself; either
failing switches this logger to offline with one warning line.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from advmed.utils.library_noise import drop_unset_wandb_anonymous

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"


def server_reachable(base_url: str | None = None, timeout_s: float = 5.0) -> str | None:
    """None when a TCP connection to the W&B server opens within ``timeout_s``; else why not."""
    url = urlparse(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"cannot reach {host}:{port} ({err})"


def start_or_fall_back(entry: DictConfig | dict, logger: WandbLogger) -> WandbLogger:
    """``logger`` with its W&B run started, or (server unreachable, init failed) the logger of
    ``entry`` rebuilt offline. An offline logger is returned as it is."""
    if logger._offline or rank_zero_only.rank != 0:  # other DDP ranks never start a W&B run
        return logger
    reason = server_reachable()
    if reason is None:
        try:
            logger.experiment  # noqa: B018 - starts the run (wandb.init) now, not at the first log call
            return logger
        except Exception as err:  # wandb raises CommError, AuthenticationError, UsageError, ...
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    import wandb

    if wandb.run is not None:  # a half-started run would swallow the offline one's logs
        wandb.finish(exit_code=1, quiet=True)
    offline = instantiate(entry, offline=True)
    drop_unset_wandb_anonymous(offline)
    log.warning("W&B online logging unavailable (%s): logging offline to %s/wandb; push it later with "
                "`wandb sync %s/wandb/offline-run-*`", reason, offline.save_dir, offline.save_dir)
    # The environment may say online; the offline run must not try again.
    os.environ["WANDB_MODE"] = "offline"
    return offline
