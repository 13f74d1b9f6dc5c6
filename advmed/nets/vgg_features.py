"""Frozen VGG19 feature maps phi_i for the perceptual (content) loss of SRGAN (Ledig et al. 2017,
sec. 2.2.1; Lockshin et al. 2022, eq. 4).

``phi_{i,j}`` is the feature map after the j-th convolution (and its ReLU) before the i-th max
pooling of an ImageNet-trained VGG19 (Simonyan & Zisserman 2015); Ledig et al. use ``phi_{5,4}``
("relu5_4", the default) and ``phi_{2,2}``. Names map to torchvision's ``vgg19().features``
indices (:data:`VGG19_LAYERS`): ``reluI_J`` after the activation, ``convI_J`` before it (the choice
of ESRGAN, Wang et al. 2018).

Weights come from a local file only (DESIGN contract 5): the path given, or the file torchvision's
``VGG19_Weights.IMAGENET1K_V1`` would download into the torch hub cache
(``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``). A missing file raises a
FileNotFoundError that says which file to put where, or, with ``on_missing="warn"``, warns and
leaves the extractor unavailable (``available`` is False) so that the loss switches its perceptual
term off. Inputs are [0, 1] images; the ImageNet normalisation is inside.

Written here: torchvision builds the VGG19 layers (``make_layers``); what it lacks is truncation
by layer name, frozen use as a loss network and loading without a download.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from advmed.nets.resnet import ImageNetNormalize

VGG19_URL = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
VGG19_FILE_NAME = Path(VGG19_URL).name  # vgg19-dcbb9e9d.pth
ON_MISSING = ("error", "warn")
_VGG19_CONFIG = cfgs["E"]  # 64, 64, M, 128, 128, M, 256 x4, M, 512 x4, M, 512 x4, M


def _vgg19_layer_indices() -> dict[str, int]:
    # Walk torchvision's VGG19 configuration the way make_layers does: a number is a conv then a
    # ReLU (two modules), "M" a max pooling that closes block i.
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for item in _VGG19_CONFIG:
        if item == "M":
            index, block, conv = index + 1, block + 1, 1
            continue
        names[f"conv{block}_{conv}"] = index
        names[f"relu{block}_{conv}"] = index + 1
        index, conv = index + 2, conv + 1
    return names


VGG19_LAYERS: dict[str, int] = _vgg19_layer_indices()
"""Layer name (``relu5_4``, ``conv2_2``, ...) -> index in torchvision's ``vgg19().features``."""


def vgg19_weights_file() -> Path:
    """Where torchvision caches the ImageNet VGG19 weights: ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE_NAME


def vgg19_layer_index(layer: str) -> int:
    """Index of ``layer`` in ``vgg19().features``; a ValueError lists the valid names."""
    if layer not in VGG19_LAYERS:
        raise ValueError(f"layer={layer!r} is not a VGG19 layer; choose one of {', '.join(VGG19_LAYERS)}")
    return VGG19_LAYERS[layer]


def truncated_vgg19(layer: str) -> nn.Sequential:
    """torchvision's VGG19 ``features`` up to and including ``layer`` (randomly initialised)."""
    index = vgg19_layer_index(layer)
    # make_layers builds the same modules at the same indices for any prefix of the configuration,
    # so only the needed blocks are built (the full VGG19 with its 120M-weight classifier takes seconds).
    prefix: list[int | str] = []
    size = 0  # modules built so far: a conv and its ReLU per number, one max pooling per "M"
    for item in _VGG19_CONFIG:
        if size > index:
            break
        prefix.append(item)
        size += 1 if item == "M" else 2
    return make_layers(prefix)[: index + 1]


def load_vgg19_features(network: nn.Sequential, path: Path) -> None:
    """Load the ``features.*`` tensors of a torchvision VGG19 state dict at ``path`` into the
    truncated ``network`` (the classifier and deeper layers in the file are ignored)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' holds a {type(state).__name__}, not a torchvision VGG19 state dict")
    wanted = network.state_dict().keys()
    features = {key: state.get(f"features.{key}") for key in wanted}
    missing = [f"features.{key}" for key, value in features.items() if value is None]
    if missing:
        raise ValueError(f"'{path}' is not a torchvision VGG19 state dict: it lacks {missing[:3]}; "
                         f"use the file of {VGG19_URL}")
    try:
        network.load_state_dict(features)
    except RuntimeError as err:  # shape mismatch: another VGG (or another network) saved under the same keys
        raise ValueError(f"'{path}' does not hold VGG19 weights: {err}") from err


class VGGFeatures(nn.Module):
    """``phi_i``: [0, 1] images (N, 3, H, W) -> frozen VGG19 feature maps at ``layer``.

    Args:
        layer: a name of :data:`VGG19_LAYERS`; ``"relu5_4"`` is Ledig et al.'s phi_{5,4}.
        weights_path: a local torchvision VGG19 state dict; None: the torch hub cache file
            (:func:`vgg19_weights_file`). Never downloaded.
        on_missing: ``"error"`` (FileNotFoundError naming the file, the directory and the URL to
            fetch it from by hand) or ``"warn"`` (a warning; :attr:`available` is False and the
            caller must not call the extractor).
        network: any module used in place of the VGG19 (after the normalisation; no weights are
            loaded), e.g. a tiny one in tests.

    The network stays in eval mode and without parameter gradients; gradients still reach the input.
    """

    def __init__(self, layer: str = "relu5_4", weights_path: str | Path | None = None, on_missing: str = "error",
                 network: nn.Module | None = None) -> None:
        super().__init__()
        if on_missing not in ON_MISSING:
            raise ValueError(f"on_missing={on_missing!r} must be one of {ON_MISSING}")
        self.layer = layer
        self.normalize = ImageNetNormalize()
        self.available = True
        self.missing_reason: str | None = None
        if network is None:
            network = truncated_vgg19(layer)  # checks the layer name before looking for a file
            path = self._weights_path(weights_path)
            if path.is_file():
                load_vgg19_features(network, path)
            elif on_missing == "error":
                raise FileNotFoundError(self._missing_message(path, weights_path))
            else:
                self.available, self.missing_reason = False, self._missing_message(path, weights_path)
                warnings.warn(f"VGG19 PERCEPTUAL FEATURES UNAVAILABLE: {self.missing_reason} "
                              "The perceptual (VGG content) loss is switched off (on_missing='warn').", stacklevel=2)
                network = None
        self.network = network.requires_grad_(False).eval() if network is not None else None

    @staticmethod
    def _weights_path(weights_path: str | Path | None) -> Path:
        return vgg19_weights_file() if weights_path is None else Path(weights_path).expanduser()

    @staticmethod
    def _missing_message(path: Path, weights_path: str | Path | None) -> str:
        where = f"the torch hub cache directory '{path.parent}'" if weights_path is None else f"'{path.parent}'"
        return (f"VGG19 weights '{path.name}' not found in {where} (looked for '{path}'). advmed never downloads "
                f"weights: fetch {VGG19_URL} yourself and save it as '{path}'"
                + ("" if path.name == VGG19_FILE_NAME else f", or point weights_path at your copy of {VGG19_FILE_NAME}")
                + ".")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.network is not None:
            self.network.eval()  # a loss network: never in training mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.network is None:
            raise RuntimeError(f"VGGFeatures is unavailable ({self.missing_reason}); check .available before calling it")
        return self.network(self.normalize(x))
