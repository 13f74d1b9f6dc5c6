"""FID of a class-conditional generator against one split of its data, with a selectable feature
extractor (Lockshin et al. 2022, eq. 2).

The FID of the paper uses Inception-v3 features (:class:`~advmed.metrics.fid.InceptionV3Features`,
weights from a local file only). Where those weights are absent (a CPU machine without the file,
tests), the features can instead be the penultimate layer of a trained advmed ResNet classifier
(:class:`ClassifierFeatures`). Such an FID measures the same Fréchet distance (eq. 2) in another
feature space: it is comparable only with FIDs computed from the same classifier checkpoint, never
with published Inception FIDs. The extractor's description travels with every result. The
classifier is loaded by the caller (:func:`advmed.models.fid_judge.load_judge`, which also makes it
the judge that tests the conditioning) and handed over as a network.

Settings are the ``model.fid`` keys of :data:`FID_DEFAULTS`; :func:`check_fid_settings` refuses
unknown keys and bad values with the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from advmed.metrics.fid import ClassConditionalFID
from advmed.nets.stylegan2_layers import NOISE_MODES
from advmed.utils.progress import ProgressReporter

FID_FEATURES = ("inception", "classifier")
REFERENCE_SPLITS = ("train", "val", "test")
_SPLIT_STAGE = {"train": "fit", "val": "fit", "test": "test"}  # the datamodule stage that builds a split
FID_DEFAULTS: dict[str, Any] = {
    "features": "inception",    # inception (the paper's) | classifier
    "weights_path": None,       # Inception weights file; None: the torch hub cache
    "classifier_ckpt": None,    # ClassifierModule checkpoint: the features of `classifier`, and the judge
    "reference_split": "train",  # the paper compares generated tiles with the train partition
    "num_images": None,         # reference images of the test FID (generated: the same labels); None: all
    "batch_size": 64,           # images per generator / extractor call
    "seed": 0,                  # seed of the generated latents (the same images at every evaluation)
    "noise_mode": "random",     # per-tile noise of the generated images (StyleGAN2's metrics); const: the stored noise
    "resize": False,            # classifier features / judge: resize all images to the classifier's size (else: equal sizes)
}


def check_fid_settings(settings: Mapping[str, Any] | None, judge_given: bool = False) -> dict[str, Any]:
    """``settings`` merged over :data:`FID_DEFAULTS`, or a ValueError naming the bad key or value.
    ``judge_given``: the caller holds a judge network itself, so ``features=classifier`` needs no
    ``classifier_ckpt``."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(FID_DEFAULTS))
    if unknown:
        raise ValueError(f"model.fid has no key(s) {unknown}: the keys are {sorted(FID_DEFAULTS)}")
    cfg = {**FID_DEFAULTS, **settings}
    if cfg["features"] not in FID_FEATURES:
        raise ValueError(f"model.fid.features={cfg['features']!r} must be one of {FID_FEATURES}")
    if cfg["features"] == "classifier" and not cfg["classifier_ckpt"] and not judge_given:
        raise ValueError("model.fid.features=classifier needs model.fid.classifier_ckpt=<classifier run>/checkpoints/"
                         "best.ckpt (train one with python -m advmed.train experiment=lockshin/classifier_tiny)")
    if cfg["reference_split"] not in REFERENCE_SPLITS:
        raise ValueError(f"model.fid.reference_split={cfg['reference_split']!r} must be one of {REFERENCE_SPLITS} "
                         "(the paper: train)")
    count = cfg["num_images"]
    if count is not None and (not isinstance(count, int) or count < 2):
        raise ValueError(f"model.fid.num_images={count} must be an integer >= 2 (a covariance needs two images), "
                         "or null for the whole reference split")
    if not isinstance(cfg["resize"], bool):
        raise ValueError(f"model.fid.resize={cfg['resize']!r} must be true or false")
    if cfg["noise_mode"] not in NOISE_MODES:
        raise ValueError(f"model.fid.noise_mode={cfg['noise_mode']!r} must be one of {NOISE_MODES}")
    for key in ("batch_size", "seed"):
        low = 1 if key == "batch_size" else 0
        if not isinstance(cfg[key], int) or cfg[key] < low:
            raise ValueError(f"model.fid.{key}={cfg[key]} must be an integer >= {low}")
    return cfg


class ClassifierFeatures(nn.Module):
    """[0, 1] images -> the global-average-pooled penultimate features (N, F) of an advmed
    :class:`~advmed.nets.ResNetClassifier` (the input of its ``fc`` layer; F = 512 for ResNet18/34,
    2048 for ResNet50), float32. Shares the classifier's modules (no copy).

    Args:
        classifier: the trained network (``ClassifierModule.net``).
        name: what the description calls it (e.g. the checkpoint's file and hash).
        input_size: resize every image to this side first (:func:`resize_to`), as Inception FIDs
            resize to 299; None: as given.
    """

    def __init__(self, classifier: nn.Module, name: str, input_size: int | None = None) -> None:
        super().__init__()
        self.input_size = input_size
        backbone = classifier.backbone
        self.normalize = classifier.normalize
        # torchvision's ResNet.forward is these children in order, then flatten and fc.
        self.trunk = nn.Sequential(*(module for key, module in backbone.named_children() if key != "fc"))
        self.num_features = int(backbone.fc.in_features)
        resized = f", images resized to {input_size} px" if input_size else ""
        self.description = (f"advmed classifier penultimate {self.num_features} ({name}{resized}); "
                            "comparable only with FIDs from the same classifier checkpoint and sizes")

    def forward(self, images: Tensor) -> Tensor:
        return self.trunk(self.normalize(resize_to(images, self.input_size))).flatten(1).float()


def resize_to(images: Tensor, size: int | None) -> Tensor:
    """``images`` resized to ``size`` x ``size`` (bilinear with antialiasing, the same for real and
    generated images, so the FID compares like with like); unchanged when ``size`` is None or theirs."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def reference_loader(datamodule, split: str) -> Iterable:
    """The ``split`` dataloader of ``datamodule`` (set up for it first): the real images of the FID,
    as the loader gives them (no training augmentation: that runs on the device, in training only)."""
    if datamodule is None:
        raise ValueError("FID needs the datamodule of the run: call trainer.fit / trainer.test with datamodule=...")
    datamodule.setup(_SPLIT_STAGE[split])
    return getattr(datamodule, f"{split}_dataloader")()


def add_real_images(fid: ClassConditionalFID, batches: Iterable, max_images: int | None = None,
                    pooled: bool = False, rank: int = 0, world_size: int = 1) -> Tensor:
    """Feed the real ``(x, y)`` batches (this rank's share: every ``world_size``-th batch) into
    ``fid``, at most ``max_images`` in all (split evenly among ranks); returns the labels fed.
    ``pooled``: every image counts as class 0 (a one-class ``fid``: the overall FID only)."""
    cap = None if max_images is None else max_images // world_size
    fed: list[Tensor] = []
    count = 0
    with torch.no_grad(), _float32(), ProgressReporter("fid real images", cap, unit="images") as progress:
        for index, (x, y) in enumerate(batches):
            if index % world_size != rank:
                continue
            if cap is not None:
                x, y = x[: cap - count], y[: cap - count]
            if len(y):
                fid.update(x.float(), torch.zeros_like(y) if pooled else y, real=True)
                fed.append(y.cpu())
                count += len(y)
                progress.update(len(y))
            if cap is not None and count >= cap:
                break
    return torch.cat(fed) if fed else torch.zeros(0, dtype=torch.long)


def add_generated_images(fid: ClassConditionalFID, sample: Callable[..., Tensor], labels: Tensor, batch_size: int,
                         generator: torch.Generator, pooled: bool = False, noise_mode: str = "random") -> None:
    """Feed ``sample(labels_chunk, generator=generator, noise_mode=noise_mode)`` images of ``labels`` into ``fid``, in
    chunks of ``batch_size`` (each chunk's latents are drawn from ``generator`` in turn, so a seed and a
    batch size fix the images)."""
    with torch.no_grad(), _float32(), ProgressReporter("fid generated images", len(labels), unit="images") as progress:
        for chunk in labels.split(batch_size):
            images = sample(chunk, generator=generator, noise_mode=noise_mode).float()
            fid.update(images, torch.zeros_like(chunk) if pooled else chunk, real=False)
            progress.update(len(chunk))


def balanced_labels(num_images: int, num_classes: int) -> Tensor:
    """``0, 1, ..., K-1, 0, 1, ...``: ``num_images`` labels with every class as often as possible."""
    return torch.arange(num_images) % num_classes


def _float32() -> ExitStack:
    """Autocast off: the features and the statistics of eq. 2 in float32 whatever the trainer's precision."""
    stack = ExitStack()
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        stack.enter_context(torch.autocast(device_type=device, enabled=False))
    return stack
