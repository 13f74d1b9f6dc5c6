"""Load advmed checkpoints safely (``weights_only=True``) for any advmed LightningModule, with
errors that say what is wrong."""

from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path
from typing import TypeVar

import torch

from advmed.models.base import CLASS_KEY, AdvmedModule

M = TypeVar("M", bound=AdvmedModule)

# Checkpoints written before modules recorded their class: these keys mean a ClassifierModule.
_LEGACY_CLASSIFIER_KEYS = {"arch", "num_classes", "in_channels"}
_LEGACY_CLASSIFIER = "advmed.models.classifier.ClassifierModule"


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


def _module_class(path: Path, ckpt: object, expected: type[M]) -> type[M]:
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    hparams = hparams if isinstance(hparams, dict) else {}
    name = ckpt.get(CLASS_KEY) if isinstance(ckpt, dict) else None
    if name is None and _LEGACY_CLASSIFIER_KEYS <= set(hparams):
        name = _LEGACY_CLASSIFIER
    wanted = "LightningModule" if expected is AdvmedModule else expected.__name__
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(name, str):
        found = sorted(hparams)[:5] or "no hyper-parameters"
        raise ValueError(
            f"'{path}' is not an advmed {wanted} checkpoint (found {found}); "
            "pass a checkpoint written by `python -m advmed.train`"
        )
    # Only advmed's own classes: a checkpoint must not be able to import arbitrary code.
    module_name, _, class_name = name.rpartition(".")
    cls = None
    if module_name.startswith("advmed."):
        cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, AdvmedModule)):
        raise ValueError(f"'{path}' names the module class '{name}', which is not an advmed LightningModule")
    if not issubclass(cls, expected):
        raise ValueError(
            f"'{path}' is not an advmed {wanted} checkpoint: it holds a {cls.__name__}; "
            f"pass a checkpoint of a {wanted}"
        )
    return cls


def load_module(
    path: str | Path,
    expected: type[M] = AdvmedModule,
    datamodule=None,
    map_location: str | torch.device = "cpu",
) -> M:
    """Rebuild the advmed LightningModule saved in checkpoint ``path``, in eval mode.

    The class comes from the checkpoint (it must be ``expected`` or a subclass), the constructor
    arguments from its hyper-parameters (through the class's ``restore_kwargs``), the weights from
    its state dict. With ``datamodule``, the module's ``check_datamodule`` refuses data of other
    classes or channels instead of silently evaluating the wrong label space.
    """
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path)
    cls = _module_class(path, ckpt, expected)
    module = cls(**cls.restore_kwargs(dict(ckpt.get("hyper_parameters") or {})))
    if datamodule is not None:
        try:
            module.check_datamodule(datamodule)
        except ValueError as err:
            raise ValueError(f"checkpoint '{path}': {err}") from None
    module.load_state_dict(ckpt["state_dict"])
    return module.to(map_location).eval()


def load_classifier(
    path: str | Path,
    num_classes: int | None = None,
    in_channels: int | None = None,
    map_location: str | torch.device = "cpu",
):
    """:func:`load_module` for a :class:`ClassifierModule`, checked against ``num_classes`` /
    ``in_channels`` when given."""
    from types import SimpleNamespace

    from advmed.models.classifier import ClassifierModule

    data = SimpleNamespace(num_classes=num_classes, in_channels=in_channels)
    return load_module(path, ClassifierModule, data, map_location)


def load_generator(path: str | Path, module_class: str, build, train_command: str) -> tuple[torch.nn.Module, dict]:
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
