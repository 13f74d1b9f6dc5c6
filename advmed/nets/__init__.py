"""Plain nn.Modules (no Lightning): the networks that LightningModules wrap."""

from advmed.nets.resnet import ResNetClassifier
from advmed.nets.unet import UNet

__all__ = ["ResNetClassifier", "UNet"]
