"""LightningModules (one file each) and their checkpoint loaders."""

from advmed.models.checkpoint import load_classifier, read_checkpoint
from advmed.models.classifier import ClassifierModule

__all__ = ["ClassifierModule", "load_classifier", "read_checkpoint"]
