"""Load advmed checkpoints safely (``weights_only=True``) for any advmed LightningModule, with
errors that say what is wrong.

Reading the file itself (and pulling a generator network out of it) is
:mod:`advmed.utils.checkpoint_file`, below the LightningModules; this module rebuilds modules."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TypeVar

import torch

from advmed.models.base import CLASS_KEY, AdvmedModule
from advmed.utils.checkpoint_file import read_checkpoint

M = TypeVar("M", bound=AdvmedModule)

# Checkpoints written before modules recorded their class: these keys mean a ClassifierModule.
_LEGACY_CLASSIFIER_KEYS = {"arch", "num_classes", "in_channels"}
_LEGACY_CLASSIFIER = "advmed.models.classifier.ClassifierModule"


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
