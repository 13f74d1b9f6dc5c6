"""The judge classifier of a class-conditional generator (Lockshin et al. 2022): a trained
:class:`~advmed.models.classifier.ClassifierModule` that tests the conditioning and, with
``model.fid.features=classifier``, lends its penultimate layer to the FID
(:class:`~advmed.metrics.generator_fid.ClassifierFeatures`).

Loading it is a model concern (a LightningModule from its checkpoint); the FID metric below it is
handed the network only.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from advmed.models.checkpoint import load_module
from advmed.models.classifier import ClassifierModule


def load_judge(path: str | Path, num_classes: int, in_channels: int, class_names: list[str], image_size: int,
               resize: bool = False) -> ClassifierModule:
    """The :class:`~advmed.models.classifier.ClassifierModule` of checkpoint ``path`` (eval mode,
    on CPU, without gradients), checked against the generator's classes, channels and (unless
    ``resize``: images will be resized to the judge's size,
    :func:`~advmed.metrics.generator_fid.resize_to`) image size."""
    data = SimpleNamespace(num_classes=num_classes, in_channels=in_channels, class_names=list(class_names))
    judge = load_module(path, ClassifierModule, data)  # FileNotFoundError / ValueError naming the file
    size = judge.hparams.get("image_size")
    if size is not None and size != image_size and not resize:
        raise ValueError(
            f"model.fid.classifier_ckpt '{Path(path).expanduser()}' was trained on image_size={size} tiles but the "
            f"generator makes image_size={image_size}: train the classifier on data.image_size={image_size} "
            "(python -m advmed.train experiment=lockshin/classifier_tiny data.image_size=...), or set "
            "model.fid.resize=true to resize every image to the classifier's size"
        )
    return judge.requires_grad_(False)
