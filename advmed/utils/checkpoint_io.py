"""Checkpoints written atomically: a kill mid-save leaves the previous ``last.ckpt`` whole.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction, which on a local disk
stages the bytes in the system temp folder and *copies* them over the target when that folder is
on another file system (as ``/tmp`` and a cluster's scratch space usually are): a kill during
the copy leaves a truncated checkpoint under the real name. Here the bytes go to a temporary
file beside the target, are flushed to disk, and replace it in one ``os.replace``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from advmed.utils.checkpoint_file import unreadable_checkpoint_message


def _temporary_name(path: Path) -> Path:
    # One fixed name per target: a temp file a killed save left behind is overwritten by the next.
    return path.with_name(f".{path.name}.partial")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on local and network file systems, and whose
    loads fail with a message naming a truncated or corrupt file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        if "://" in str(path):  # object stores: Lightning's own writer (their uploads are atomic)
            return super().save_checkpoint(checkpoint, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = _temporary_name(path)
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        # The rename itself survives a power loss only once the folder entry is on disk.
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if "://" not in str(path) and not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint '{path}' does not exist")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise ValueError(unreadable_checkpoint_message(path, err)) from err
