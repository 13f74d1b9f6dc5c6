"""Which checkpoint a training run continues from (``ckpt_path``), after a kill or a SLURM requeue.

- ``ckpt_path=<file>``: that checkpoint; it must exist and be readable.
- ``ckpt_path=last``: ``<run dir>/checkpoints/last.ckpt`` when it exists, else a fresh start
  (so one command both starts a run and continues it after a kill).
- ``ckpt_path=null``: a fresh start, except in a SLURM job that was requeued (preemption, time
  limit, ``scontrol requeue``): it continues from its own ``last.ckpt`` when there is one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from advmed.utils.checkpoint_file import read_checkpoint

log = logging.getLogger(__name__)

LAST = "last"


def last_checkpoint(output_dir: str | Path) -> Path:
    """Where a run in ``output_dir`` keeps its latest state (see ``callbacks.model_checkpoint.save_last``)."""
    return Path(output_dir) / "checkpoints" / "last.ckpt"


def slurm_restart_count() -> int:
    """How many times SLURM has requeued this job (0 outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint file ``trainer.fit`` should resume from, or None for a fresh start.

    An existing file is opened here (memory-mapped: Lightning reads it right after), so a truncated
    or corrupt checkpoint fails before any training with a message naming it.
    """
    if ckpt_path is None and slurm_restart_count() > 0:
        ckpt_path = LAST
        reason = f"SLURM requeued this job ({slurm_restart_count()} restart(s))"
    else:
        reason = "ckpt_path=last"
    if ckpt_path is None:
        return None
    if str(ckpt_path) == LAST:
        path = last_checkpoint(output_dir)
        if not path.is_file():
            log.info("%s: no %s yet, starting from scratch", reason, path)
            return None
    else:
        path = Path(str(ckpt_path)).expanduser()
        reason = f"ckpt_path={ckpt_path}"
    state = read_checkpoint(path, mmap=True)
    log.info("resuming from %s (epoch %s, step %s; %s)", path, state.get("epoch"), state.get("global_step"), reason)
    return str(path)
