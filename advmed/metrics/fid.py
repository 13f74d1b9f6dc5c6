"""Fréchet Inception Distance (FID) per class and overall, with Inception-v3 weights from a local file.

FID (Heusel et al. 2017; Lockshin et al. 2022, eq. 2) compares Gaussians fitted to features of real
(``m_w, C_w``) and generated (``m, C``) images::

    d^2 = ||m - m_w||_2^2 + Tr(C + C_w - 2 (C C_w)^{1/2})

The statistics and the distance come from torchmetrics' ``FrechetInceptionDistance``: it keeps
running float64 sums (sum of features, sum of outer products, count) — memory independent of the
number of images — syncs them across DDP ranks and computes eq. 2 from the eigenvalues of
``C C_w``. What torchmetrics lacks, and this module adds:

* **No download, ever.** torchmetrics / torch-fidelity fetch the Inception weights from GitHub when
  no path is given; :func:`resolve_inception_weights` only looks at a given path or the torch hub
  cache and otherwise raises a FileNotFoundError saying which file to put where.
* **Per-class FID.** Features are extracted once per image; each class and the pooled set ("overall",
  all images of all classes, *not* the mean of the per-class values) get their own torchmetrics
  metric fed with those features. Memory: ``(num_classes + 1) * 2 * F^2 * 8`` bytes of running sums
  (F = 2048 for Inception: 67 MB per metric, 0.67 GB for 9 classes) whatever the number of images.
* **Provenance of the number.** FID depends on the feature extractor, the image counts, and the
  resize; :meth:`ClassConditionalFID.compute` returns the counts and the extractor's description
  with the scores, because values are only comparable at equal settings. Few images bias FID
  upwards; use more images than features (the paper: 18,000 images, 2048 features).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3

# The FID reference network (TensorFlow's inception-2015-12-05 graph) converted to PyTorch. torch-fidelity
# (and so torchmetrics) caches its conversion in torch.hub's checkpoints folder under this name.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
# pytorch-fid's conversion of the same graph has the same parameter names and shapes (torchvision's
# Inception3 layout, 1008 classes), so it loads into torch-fidelity's network too.
PYTORCH_FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_WEIGHTS_FILE
)
INCEPTION_FEATURES = 2048  # pool3, the layer of eq. 2 ("the last linear layer ... a vector of length 2048")


def inception_weights_dir() -> Path:
    """Where torch.hub (and torch-fidelity) keep downloaded weights: ``torch.hub.get_dir()/checkpoints``
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """The local file of the FID Inception-v3 weights; never downloads.

    ``path`` given: that file. Otherwise the first of :data:`INCEPTION_WEIGHTS_FILE` (torch-fidelity)
    and :data:`PYTORCH_FID_WEIGHTS_FILE` (pytorch-fid) found in :func:`inception_weights_dir`.

    Raises:
        FileNotFoundError: the file is missing; the message names it, the folder and the URL.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"FID Inception weights not found at {path}. Download {INCEPTION_WEIGHTS_URL} "
                f"(or {PYTORCH_FID_WEIGHTS_URL}) and pass its local path."
            )
        return path
    folder = inception_weights_dir()
    for name in (INCEPTION_WEIGHTS_FILE, PYTORCH_FID_WEIGHTS_FILE):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"FID Inception weights {INCEPTION_WEIGHTS_FILE} not found in {folder} (torch.hub.get_dir()/checkpoints; "
        f"set TORCH_HOME to move it). Nothing is downloaded at run time: download {INCEPTION_WEIGHTS_URL} into "
        f"{folder}, or put pytorch-fid's {PYTORCH_FID_WEIGHTS_FILE} ({PYTORCH_FID_WEIGHTS_URL}) there, "
        "or pass the file's path as weights_path."
    )


def to_uint8_rgb(images: Tensor) -> Tensor:
    """[0, 1] float images (N, 1 or 3, H, W) as the uint8 RGB batch the reference Inception expects.

    Rounded (as when the images are saved to PNG, which FID tools read), not truncated like
    torchmetrics' ``normalize=True`` path. Grey images are repeated to three channels, as usual for
    FID of single-channel medical images.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"Inception FID needs images of shape (N, 3, H, W) or (N, 1, H, W); got {tuple(images.shape)}. "
            "Pass RGB or greyscale batches, or inject a feature_extractor for other channel counts."
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


class InceptionV3Features(nn.Module):
    """The FID reference network (torch-fidelity's InceptionV3, through torchmetrics): [0, 1] float
    images (N, 1 or 3, H, W) -> pool3 features (N, 2048), float32.

    Args:
        weights_path: the weights file; None: looked up by :func:`resolve_inception_weights`.
        antialias: resize to 299 px with antialiased bilinear (torchmetrics' default) instead of
            TensorFlow 1.x's bilinear (torch-fidelity's, which reproduces the reference FID of
            Heusel et al. and StyleGAN2). Default False, so values compare with published FIDs.
    """

    num_features = INCEPTION_FEATURES  # read by torchmetrics, so it needs no dummy forward

    def __init__(self, weights_path: str | Path | None = None, antialias: bool = False) -> None:
        super().__init__()
        self.weights_path = resolve_inception_weights(weights_path)
        self.antialias = bool(antialias)
        self.network = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(INCEPTION_FEATURES)],
            feature_extractor_weights_path=str(self.weights_path), antialias=self.antialias,
        )

    @property
    def description(self) -> str:
        resize = "antialiased bilinear" if self.antialias else "TF1 bilinear"
        return f"torch-fidelity InceptionV3 pool3 {INCEPTION_FEATURES} ({self.weights_path.name}, {resize} to 299 px)"

    def forward(self, images: Tensor) -> Tensor:
        return self.network(to_uint8_rgb(images))


class _PrecomputedFeatures(nn.Module):
    """Stands in for torchmetrics' feature network so that a metric accumulates features extracted
    once elsewhere (one extraction feeds a class's metric and the overall one). Returns float64 so the
    FID comes back as float64."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features.double()


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor (N, C, H, W) in [0, 1]; got dtype {images.dtype}, "
            f"shape {tuple(images.shape)}. Convert uint8 images with images.float() / 255."
        )
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"images must lie in [0, 1]; got values in [{images.min().item():.4g}, {images.max().item():.4g}]. "
            "Undo any normalisation (mean/std or [-1, 1]) before FID."
        )


class ClassConditionalFID(nn.Module):
    """FID of generated against real images, per class and over all images pooled.

    ``update(images, labels, real)`` takes [0, 1] float images (N, C, H, W) and class indices (N,)
    (images on any device: they are moved to the extractor's device, features to the metrics').
    ``compute()`` returns a flat dict:

    - ``fid``: eq. 2 over all images pooled; ``fid_<class>``: over the images of that class;
    - ``num_real``, ``num_generated``, ``num_real_<class>``, ``num_generated_<class>``: image counts;
    - ``feature_extractor``: what produced the features (FIDs compare only at equal settings).

    An FID with fewer than 2 real or 2 generated images is undefined and reported as NaN.
    ``reset()`` starts a new evaluation (keeping the real statistics when ``reset_real_features`` is
    False: the real set rarely changes between evaluations of a GAN).

    Args:
        class_names: one name per class index, used in the keys.
        feature_extractor: a module mapping [0, 1] images (N, C, H, W) to features (N, F), e.g. a tiny
            network in tests; None: :class:`InceptionV3Features` (weights from ``weights_path`` or the
            torch hub cache).
        num_features: F; None: the extractor's ``num_features`` attribute.
        feature_extractor_name: the extractor's description in the result; None: its ``description``
            attribute, else its class name.
        weights_path: Inception weights file (only without ``feature_extractor``).
        reset_real_features: whether ``reset()`` also forgets the real images.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        feature_extractor: nn.Module | None = None,
        num_features: int | None = None,
        feature_extractor_name: str | None = None,
        weights_path: str | Path | None = None,
        reset_real_features: bool = True,
    ) -> None:
        super().__init__()
        self.class_names = [str(name) for name in class_names]
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be non-empty and unique; got {list(class_names)}")
        if feature_extractor is None:
            feature_extractor = InceptionV3Features(weights_path)
        elif weights_path is not None:
            raise ValueError(
                f"weights_path={weights_path!r} is only used by the default Inception extractor; "
                "drop it or drop feature_extractor."
            )
        num_features = num_features if num_features is not None else getattr(feature_extractor, "num_features", None)
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(
                f"num_features={num_features!r}: pass the extractor's feature count as num_features=... "
                "or give the extractor an int num_features attribute."
            )
        self.num_features = num_features
        self.feature_extractor = feature_extractor.eval().requires_grad_(False)
        self.feature_extractor_name = feature_extractor_name or getattr(
            feature_extractor, "description", type(feature_extractor).__name__
        )

        def metric() -> FrechetInceptionDistance:
            return FrechetInceptionDistance(
                feature=_PrecomputedFeatures(num_features), reset_real_features=reset_real_features
            )

        self.overall = metric()
        self.per_class = nn.ModuleList(metric() for _ in self.class_names)

    def train(self, mode: bool = True) -> ClassConditionalFID:
        """Keep the extractor in eval mode (a Lightning module switching modes must not turn on
        dropout or batch-norm updates inside it)."""
        super().train(mode)
        self.feature_extractor.eval()
        return self

    def _state_device(self) -> torch.device:
        return self.overall.real_features_sum.device

    def _extractor_device(self) -> torch.device:
        tensor = next(self.feature_extractor.parameters(), None)
        tensor = tensor if tensor is not None else next(self.feature_extractor.buffers(), None)
        return tensor.device if tensor is not None else self._state_device()

    @torch.no_grad()
    def update(self, images: Tensor, labels: Tensor, real: bool) -> None:
        _check_images(images)
        if labels.shape != (images.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"labels must be integer class indices of shape ({images.shape[0]},); got dtype {labels.dtype}, "
                f"shape {tuple(labels.shape)}."
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            bad = labels[(labels < 0) | (labels >= len(self.class_names))][0].item()
            raise ValueError(
                f"label {bad} is not a class index: expected 0..{len(self.class_names) - 1} "
                f"for class_names {self.class_names}."
            )
        if images.shape[0] == 0:
            return
        features = self.feature_extractor(images.to(self._extractor_device()))
        if features.ndim != 2 or features.shape != (images.shape[0], self.num_features):
            raise ValueError(
                f"the feature extractor returned shape {tuple(features.shape)}; expected "
                f"({images.shape[0]}, {self.num_features}). Fix num_features or the extractor's output."
            )
        features = features.to(self._state_device())
        labels = labels.to(features.device)
        self.overall.update(features, real=real)
        for index in labels.unique().tolist():
            self.per_class[index].update(features[labels == index], real=real)

    @staticmethod
    def _counts(metric: FrechetInceptionDistance) -> tuple[int, int]:
        with metric.sync_context():  # all ranks' counts under DDP, a no-op otherwise
            return int(metric.real_features_num_samples), int(metric.fake_features_num_samples)

    @classmethod
    def _fid(cls, metric: FrechetInceptionDistance) -> tuple[float, int, int]:
        num_real, num_generated = cls._counts(metric)
        if num_real < 2 or num_generated < 2:  # a covariance needs two samples
            return math.nan, num_real, num_generated
        return float(metric.compute()), num_real, num_generated

    def compute(self) -> dict[str, float | int | str]:
        fid, num_real, num_generated = self._fid(self.overall)
        result: dict[str, float | int | str] = {"fid": fid, "num_real": num_real, "num_generated": num_generated}
        for name, metric in zip(self.class_names, self.per_class):
            fid, num_real, num_generated = self._fid(metric)
            result[f"fid_{name}"] = fid
            result[f"num_real_{name}"] = num_real
            result[f"num_generated_{name}"] = num_generated
        result["feature_extractor"] = self.feature_extractor_name
        return result

    def reset(self) -> None:
        self.overall.reset()
        for metric in self.per_class:
            metric.reset()
