"""Plain nn.Modules (no Lightning): the networks that LightningModules wrap."""

from advmed.nets.resnet import ResNetClassifier

__all__ = ["ResNetClassifier"]
