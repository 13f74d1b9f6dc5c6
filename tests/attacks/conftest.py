"""Tiny models and batches shared by the attack tests (CPU, 8-12 px, a few ms per call)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import advmed.attacks as attacks

NUM_CLASSES = 4
SEG_CLASSES = 3
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Normalisation inside the model (DESIGN.md contract 1)."""

    def __init__(self, mean=MEAN, std=STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def tiny_classifier(num_classes: int = NUM_CLASSES) -> nn.Module:
    # BatchNorm and Dropout make train vs eval mode visible in the outputs.
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def tiny_segmenter(num_classes: int = SEG_CLASSES) -> nn.Module:
    """Receptive field 3x3: the input gradient of a pixel's loss is zero beyond 1 px of it."""
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout2d(0.5),
        nn.Conv2d(8, num_classes, 1),
    )


def _init_bn(model: nn.Module) -> nn.Module:
    # Non-trivial running statistics, so eval mode differs from train mode.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def classifier() -> nn.Module:
    torch.manual_seed(1)
    return _init_bn(tiny_classifier()).eval()


@pytest.fixture
def segmenter() -> nn.Module:
    torch.manual_seed(2)
    return _init_bn(tiny_segmenter()).eval()


@pytest.fixture
def cls_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(8, 3, 12, 12, generator=g), torch.randint(0, NUM_CLASSES, (8,), generator=g)


@pytest.fixture
def seg_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.rand(4, 3, 10, 10, generator=g), torch.randint(0, SEG_CLASSES, (4, 10, 10), generator=g)


ATTACKS = [getattr(attacks, name) for name in attacks.__all__]


# SNAP on 10-12 px test images: a few big blobs, strong steps, untargeted unless asked.
_SNAP_TEST_ARGS = {"area_fraction": 0.3, "blob_radius": (0.1, 0.2), "steps": 3, "step_size": 0.1,
                   "confidence": None, "targeted": False, "target_class": None}


def make_attack(cls: type, **kwargs) -> attacks.Attack:
    """Small-budget instance of any attack class; iterative ones get 3 steps."""
    if cls is attacks.SNAP:
        return cls(**{**_SNAP_TEST_ARGS, **kwargs})
    kwargs.setdefault("eps", 0.5 if cls.norm == "l2" else 0.03)
    if issubclass(cls, attacks.IterativeAttack):
        kwargs.setdefault("steps", 3)
    return cls(**kwargs)


SEEDED = (attacks.PGD, attacks.PGDL2, attacks.SNAP)  # attacks with random draws and a `seed` argument


def budget(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample size of the perturbation in the attack's norm."""
    delta = (x_adv - x).flatten(1)
    return delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
