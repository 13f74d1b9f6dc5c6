"""Read an advmed checkpoint file safely (``weights_only=True``), with errors that say what is wrong.

The ground layer of checkpoint handling: what resuming (:mod:`advmed.utils.resume`), the atomic
checkpoint writer (:mod:`advmed.utils.checkpoint_io`) and the trained-generator attacks need, without
knowing any LightningModule. Rebuilding a whole module from its checkpoint is
:func:`advmed.models.checkpoint.load_module`.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Checkpoint key holding the import path of the module class that wrote it (AdvmedModule writes it).
CLASS_KEY = "advmed_module"


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """torch.load a Lightning checkpoint with ``weights_only=True``; clear errors for bad files.

    ``mmap``: map the tensors instead of reading them (a check of a file that Lightning loads
    again right after costs its index and metadata, not its gigabytes).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint '{path}' does not exist: pass ckpt_path=<run dir>/checkpoints/best.ckpt "
            "(python -m advmed.train prints the path of the best checkpoint when it finishes)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(unreadable_checkpoint_message(path, err)) from err


def unreadable_checkpoint_message(path: str | Path, err: BaseException) -> str:
    """What to say about a checkpoint file torch cannot read (a save killed by something other
    than advmed's atomic writer, a copy cut short, another format)."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"'{path}' is not a readable PyTorch checkpoint (truncated, corrupt or another format: {detail}); "
        "delete it and resume from another checkpoint of the run (e.g. ckpt_path=<run dir>/checkpoints/best.ckpt), "
        "or start the run again"
    )


def load_generator(path: str | Path, module_class: str, build: Callable[[dict], torch.nn.Module],
                   train_command: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The generator of a GAN module's checkpoint alone, without rebuilding the module (its critic,
    attacked networks or perceptual weights are not needed): ``build(hparams)`` makes the network,
    which gets the ``generator_ema.*`` weights when an EMA was kept, else ``generator.*``. Returned in
    eval mode without gradients, with the checkpoint's hyper-parameters.

    ``module_class`` is the import path the checkpoint must name; ``train_command`` (e.g.
    ``python -m advmed.train experiment=chen/deformation``) goes into the error for any other file.
    """
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get(CLASS_KEY) != module_class or "state_dict" not in ckpt:
        found = ckpt.get(CLASS_KEY, "no advmed module") if isinstance(ckpt, dict) else type(ckpt).__name__
        name = module_class.rsplit(".", 1)[-1]
        raise ValueError(f"'{path}' is not an advmed {name} checkpoint (it holds {found}): pass the best.ckpt of a "
                         f"`{train_command}` run")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    generator = build(hparams)
    state = ckpt["state_dict"]
    prefix = "generator_ema." if any(key.startswith("generator_ema.") for key in state) else "generator."
    generator.load_state_dict({key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)})
    return generator.eval().requires_grad_(False), hparams
