"""torchvision ResNet with ImageNet normalisation inside, so callers feed [0, 1] pixels.

Keeping the normalisation in the network (DESIGN contract 1) means an attack's eps is a
fraction of the intensity range, as in the papers, whatever backbone sits behind it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision builder and the ImageNet weights it would download (file names of the torch cache).
RESNET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}


class ImageNetNormalize(nn.Module):
    """(x - mean) / std with ImageNet statistics; grayscale inputs are repeated to RGB first."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def imagenet_weights_file(arch: str) -> Path:
    """Where torchvision would cache the ImageNet weights of `arch` (never downloaded here)."""
    file_name = Path(RESNET_WEIGHTS[arch].url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def resolve_pretrained_path(arch: str, pretrained_path: str | Path) -> Path:
    """Turn the config value into an existing file, or fail saying which file to put where.

    ``pretrained_path: imagenet`` means torchvision's ImageNet weights in the torch cache.
    """
    if str(pretrained_path) == "imagenet":
        path = imagenet_weights_file(arch)
        hint = f"download {RESNET_WEIGHTS[arch].url} yourself and save it as {path}"
    else:
        path = Path(pretrained_path).expanduser()
        hint = "fix model.pretrained_path, or set model.pretrained_path=null to train from scratch"
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights for {arch} not found at '{path}': {hint}. advmed never downloads weights.")
    return path


class ResNetClassifier(nn.Module):
    """torchvision ResNet (18/34/50/101) taking [0, 1] images and returning class logits.

    Args:
        arch: torchvision builder name, e.g. ``"resnet34"``.
        num_classes: size of the new classification head.
        in_channels: 1 (grayscale, repeated to RGB) or 3.
        pretrained_path: ``None``, a local ``.pth`` state dict of the torchvision ImageNet
            model, or ``"imagenet"`` for the file in the torch cache. The ImageNet head is
            dropped; only the backbone is loaded.
        pretrained_missing: what a missing weights file does: ``"error"`` (say which file to put
            where) or ``"warn"`` (train from scratch with a warning; the SNAP experiments use it:
            ImageNet weights when the user has them, otherwise still a run).
    """

    def __init__(self, arch: str = "resnet34", num_classes: int = 9, in_channels: int = 3,
                 pretrained_path: str | None = None, pretrained_missing: str = "error"):
        super().__init__()
        if arch not in RESNET_WEIGHTS:
            raise ValueError(f"model.arch='{arch}' is not supported; choose one of {sorted(RESNET_WEIGHTS)}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels={in_channels}: ResNet takes 1 (grayscale) or 3 (RGB) channels")
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        self.normalize = ImageNetNormalize()
        self.backbone = getattr(torchvision.models, arch)(weights=None)
        if pretrained_missing not in ("error", "warn"):
            raise ValueError(f"model.pretrained_missing must be 'error' or 'warn', got {pretrained_missing!r}")
        if pretrained_path is not None:
            try:
                path = resolve_pretrained_path(arch, pretrained_path)
            except FileNotFoundError as err:
                if pretrained_missing == "error":
                    raise
                warnings.warn(f"{err} Training {arch} from scratch instead (model.pretrained_missing=warn).", stacklevel=2)
                pretrained_path = None
        if pretrained_path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
                raise ValueError(f"'{path}' is not a torchvision {arch} state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))
