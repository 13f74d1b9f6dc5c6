"""Random-number state in every checkpoint, so a resumed run draws what the uninterrupted one would.

Lightning saves weights, optimiser and loop state, but not the generators that shuffle the next
epoch, pick the adversarial random starts and drive dropout. Without them a run resumed from
``last.ckpt`` (after a kill or a SLURM requeue) trains on other batches than the run it
continues, and ends with other metrics. States are stored as tensors and plain numbers, so the
checkpoint still loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def capture_random_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and every initialised CUDA device's) generators."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Set the generators to a :func:`capture_random_state` result."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, pos, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A run resumed on fewer devices restores the ones it has.
        for device, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


class RandomStateCallback(Callback):
    """Saves the generators' state with each checkpoint and restores it when training resumes.

    Only fitting restores callback state (Lightning), so testing a checkpoint leaves the
    generators alone.
    """

    def state_dict(self) -> dict[str, Any]:
        return capture_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            restore_random_state(state_dict)
