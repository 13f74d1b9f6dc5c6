"""Settings of the PGD attack-success study (the ``study:`` config node) and their checks, with
the clean-confidence bins of Fig. 3c. Below the study's other modules: they all import it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from advmed.attacks.core.validation import check_alpha, check_eps, check_seed

# The paper's grid: 0.02 .. 0.20 in steps of 0.02 (fractions of the [0, 1] intensity range).
DEFAULT_EPS = tuple(round(0.02 * i, 2) for i in range(1, 11))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_eps_list(values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"study.eps must be a list of budgets in [0, 1], got {values!r}")
    values = list(values)
    if not values:
        raise ValueError("study.eps is empty: give at least one budget in [0, 1], e.g. study.eps=[0.02,0.04]")
    checked = []
    for i, value in enumerate(values):
        try:
            checked.append(check_eps(value))
        except ValueError as err:
            raise ValueError(f"study.eps[{i}]: {err}") from None
    if len(set(checked)) != len(checked):
        raise ValueError(f"study.eps has repeated values: {values}")
    return tuple(sorted(checked))


@dataclass(frozen=True)
class ConfidenceBins:
    """``n`` equal bins over the clean confidence range ``[low, high]``: ``[e_j, e_j+1)``, last closed."""

    low: float = 0.5
    high: float = 1.0
    n: int = 10

    def __post_init__(self) -> None:
        low, high = float(self.low), float(self.high)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"study.confidence_bins needs 0 <= low < high <= 1, got low={low:g}, high={high:g}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        _positive_int("study.confidence_bins.n", self.n)

    def edges(self) -> Tensor:
        """The ``n + 1`` bin edges (float64, so that 0.55, 0.6, ... are as close as floats get)."""
        return torch.linspace(self.low, self.high, self.n + 1, dtype=torch.float64)

    def assign(self, confidence: Tensor) -> Tensor:
        """Bin index of each confidence, -1 outside ``[low, high]``."""
        c = confidence.double()
        index = torch.bucketize(c, self.edges(), right=True) - 1  # edges[i] <= c < edges[i + 1]
        index = torch.where(c == self.high, self.n - 1, index)  # the last bin includes `high`
        return torch.where((c < self.low) | (c > self.high), -1, index)


@dataclass(frozen=True)
class StudySettings:
    """What the study attacks with; the keys of the ``study:`` config node (``conf/study.yaml``).

    Args:
        eps: L-inf budgets in [0, 1]; sorted ascending.
        max_iter: PGD iterations; the iterations panel covers 1..max_iter.
        alpha: PGD step size; None: ``2.5 * eps / max_iter`` per eps (see :mod:`advmed.studies.pgd_study`).
        random_start: start PGD from a uniform random point of the eps-ball.
        seed: seeds the random start (the same start for every eps and every batch of a given
            shape), so a study is reproducible; None: the global RNG.
        max_images: attack only the first ``max_images`` test images; None: all.
        confidence_bins: ``{low, high, n}`` of :class:`ConfidenceBins`.
        apgd: also run APGD-CE (L-inf, ``steps = max_iter``, one restart, same random-start
            switch and seed) at every eps on the same images, beside PGD in Fig. 3a
            (``apgd_success_rate``): the stronger attack at equal iterations (DESIGN.md,
            contract 11). Costs one more attack per eps, at most as many passes as the PGD run.
    """

    eps: tuple[float, ...] = DEFAULT_EPS
    max_iter: int = 10
    alpha: float | None = None
    random_start: bool = True
    seed: int | None = 0
    max_images: int | None = None
    confidence_bins: ConfidenceBins = field(default_factory=ConfidenceBins)
    apgd: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_eps_list(self.eps))
        _positive_int("study.max_iter", self.max_iter)
        try:
            object.__setattr__(self, "alpha", check_alpha(self.alpha))
            check_seed(self.seed)
        except ValueError as err:
            raise ValueError(f"study.{err}") from None
        if self.max_images is not None:
            _positive_int("study.max_images", self.max_images)
        if not isinstance(self.apgd, bool):
            raise ValueError(f"study.apgd must be true or false, got {self.apgd!r}")
        bins = self.confidence_bins
        if isinstance(bins, Mapping):
            unknown = set(bins) - {f.name for f in fields(ConfidenceBins)}
            if unknown:
                raise ValueError(f"unknown study.confidence_bins key(s) {sorted(unknown)}; valid: low, high, n")
            object.__setattr__(self, "confidence_bins", ConfidenceBins(**bins))
        elif not isinstance(bins, ConfidenceBins):
            raise ValueError(f"study.confidence_bins must be {{low, high, n}}, got {bins!r}")

    @classmethod
    def from_config(cls, cfg: StudySettings | Mapping | DictConfig) -> StudySettings:
        """Settings from a ``study:`` config node; unknown keys (typos) are an error."""
        if isinstance(cfg, StudySettings):
            return cfg
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise ValueError(f"the study config must be a mapping of {[f.name for f in fields(cls)]}, got {cfg!r}")
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown study key(s) {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}")
        return cls(**cfg)
