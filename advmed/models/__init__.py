"""LightningModules (one file each) and their checkpoint loaders."""

from advmed.models.base import AdvmedModule
from advmed.models.checkpoint import load_classifier, load_module, read_checkpoint
from advmed.models.classifier import ClassifierModule

__all__ = ["AdvmedModule", "ClassifierModule", "load_classifier", "load_module", "read_checkpoint"]
