"""Shared by the benchmarks: the pixel-space model wrapper and alternating, warmed-up timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalized(nn.Module):
    """Pixel-space [0, 1] input, ImageNet normalisation inside (DESIGN.md contract 1)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


@dataclass
class Race:
    """Seconds per round of each contestant."""

    times: dict[str, list[float]]

    def best(self, name: str) -> float:
        return min(self.times[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over rounds of time[num] / time[den] (the two runs of a round are adjacent)."""
        return statistics.median(a / b for a, b in zip(self.times[num], self.times[den]))


def race(runs: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int) -> Race:
    """Time each callable once per round, alternately (order flipped every round)."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(_timed(runs[name], device))
    return Race(times)


