"""Load advmed checkpoints safely (``weights_only=True``) with errors that say what is wrong."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from advmed.models.classifier import ClassifierModule

# Keys ClassifierModule needs to rebuild its network; their absence means another model's file.
_CLASSIFIER_KEYS = {"arch", "num_classes", "in_channels"}


def read_checkpoint(path: str | Path) -> dict:
    """torch.load a Lightning checkpoint with ``weights_only=True``; clear errors for bad files."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint '{path}' does not exist: pass ckpt_path=<run dir>/checkpoints/best.ckpt "
            "(python -m advmed.train prints the path of the best checkpoint when it finishes)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ValueError(f"'{path}' is not a readable PyTorch checkpoint (truncated or another format): {err}") from err


def load_classifier(
    path: str | Path,
    num_classes: int | None = None,
    in_channels: int | None = None,
    map_location: str | torch.device = "cpu",
) -> ClassifierModule:
    """Rebuild a :class:`ClassifierModule` from its checkpoint, in eval mode.

    ``num_classes`` / ``in_channels``, when given (from the data config), must match the
    checkpoint's; a mismatch raises instead of silently attacking the wrong label space.
    """
    ckpt = read_checkpoint(path)
    hparams = (ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not _CLASSIFIER_KEYS <= set(hparams):
        saved_by = hparams.get("_class_path") or sorted(hparams)[:5] or "no hyper-parameters"
        raise ValueError(
            f"'{path}' is not an advmed ClassifierModule checkpoint (found {saved_by}); "
            "pass a checkpoint written by `python -m advmed.train` with a classifier model"
        )
    for name, expected in (("num_classes", num_classes), ("in_channels", in_channels)):
        if expected is not None and hparams[name] != expected:
            raise ValueError(
                f"checkpoint '{path}' was trained with {name}={hparams[name]} but the data config has "
                f"{name}={expected}: evaluate it on the data it was trained on (data=...)"
            )
    # The ImageNet file is not needed to restore trained weights (and may be absent here).
    module = ClassifierModule(**{**hparams, "pretrained_path": None})
    module.load_state_dict(ckpt["state_dict"])
    return module.to(map_location).eval()
