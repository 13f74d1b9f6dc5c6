"""Tiny models and batches shared by the attack tests (CPU, 8-12 px, a few ms per call)."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
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
    return cls(**{**FAST_ARGS.get(cls.__name__, {}), **kwargs})


# Per attack class (by name): the settings that keep a contract test small and fast.
FAST_ARGS: dict[str, dict] = {
    # No random start by default: the generic masked-loss test needs untouched far pixels
    # (test_apgd.py covers the random start).
    "APGD": {"steps": 3, "random_start": False},
    # Two runs of 10 steps from c = 1: enough to fool the tiny classifier within eps = 0.5.
    "CW": {"steps": 10, "binary_search_steps": 2, "c": 1.0},
    # Two restarts, so the seeded random restart runs in the contract tests too.
    "FAB": {"steps": 5, "n_restarts": 2},
    "Square": {"n_queries": 20},
}


# attacks with random draws and a `seed` argument
SEEDED = (attacks.PGD, attacks.PGDL2, attacks.SNAP, attacks.SegPGD, attacks.CosPGD, attacks.APGD, attacks.Square, attacks.FAB)
# Attacks defined for classification logits (N, K) only: the segmentation contract tests skip
# them, and each one's own test file checks that it refuses segmentation logits with a clear error.
CLASSIFICATION_ONLY: tuple[type, ...] = (attacks.Square, attacks.FAB, attacks.CW)
# Segmentation attacks that define their own weighted per-pixel cross-entropy: they refuse loss='dice'.
OWN_LOSS = (attacks.SegPGD, attacks.CosPGD)


def budget(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample size of the perturbation in the attack's norm."""
    delta = (x_adv - x).flatten(1)
    return delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)


def toy_slices(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright discs (class 1) and dark squares (class 2) on noisy grey, 1 channel: like the data of
    tests/models/segmentation_toy.py, without its datamodule (and its Lightning import)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    x = 0.5 + 0.05 * torch.randn(n, 1, size, size, generator=g)
    y = torch.zeros(n, size, size, dtype=torch.long)
    r = size // 6
    for i in range(n):
        cy, cx = torch.randint(r, size - r, (2,), generator=g).tolist()
        sy, sx = torch.randint(0, size - r, (2,), generator=g).tolist()
        y[i, sy : sy + r, sx : sx + r] = 2
        y[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    x[:, 0][y == 1] += 0.3
    x[:, 0][y == 2] -= 0.3
    return x.clamp(0, 1), y


@pytest.fixture(scope="session")
def toy_segmentation() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x, y): a small encoder-decoder trained for 150 Adam steps on 24 toy slices (24 px;
    accurate, not robust; ~2 s on one thread) and 16 held-out slices. Its receptive field (stride 2,
    dilation 2, upsampling) spans most of the image, as a real segmenter's does: every input pixel
    feeds many output pixels, which is where SegPGD's and CosPGD's reweighting matters."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.Conv2d(16, 3, 3, padding=1),
    )
    x, y = toy_slices(24, 24, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    # One thread: the same weights whatever the machine's thread count (the sums of a
    # multi-threaded convolution run in another order), and faster for convolutions this small.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(150):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.requires_grad_(False).eval()
    return (model, *toy_slices(16, 24, seed=1))


def miou_and_pixel_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mIoU over the classes present in y or the prediction, pixel accuracy) on the batch."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    ious = []
    for c in range(int(max(pred.max(), y.max())) + 1):
        union = ((pred == c) | (y == c)).sum()
        if union > 0:
            ious.append((((pred == c) & (y == c)).sum() / union).item())
    return sum(ious) / len(ious), (pred == y).float().mean().item()


@functools.cache
def tinted_classifier(n_test: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x, y): the tiny classifier trained for 40 Adam steps to tell four colour tints of
    noise apart (accurate, not robust; ~0.3 s), and ``n_test`` held-out 8 px images. Trained once
    per process for each ``n_test`` (the held-out draw follows the 256 training images)."""
    g = torch.Generator().manual_seed(0)

    def data(n):
        y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        tint = torch.full((n, 3), -0.1)  # class 3: darker; classes 0-2: one channel brighter
        tint[y < 3] = 0.0
        tint[y < 3, y[y < 3]] = 0.1
        x = torch.rand(n, 3, 8, 8, generator=g) * 0.5 + 0.25
        return (x + tint.view(n, 3, 1, 1)).clamp(0, 1), y

    torch.manual_seed(0)
    model = tiny_classifier()
    x, y = data(256)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval().requires_grad_(False)
    return (model, *data(n_test))
