"""PSNR / SSIM of super-resolved images against their high-resolution originals, beside a baseline
(bicubic upscaling), and a small CSV + markdown report of image-quality scores.

Lockshin et al. 2022 (section 4.2) report SRGAN's PSNR (30.7) and SSIM (0.93) "on average" over
the images, so both are means of per-image values (torchmetrics' PSNR with ``dim=None`` would
instead give the PSNR of the pooled MSE). Images are [0, 1] floats, so ``data_range=1``.

PSNR of two identical images is infinite (MSE 0), which would make the mean infinite; each image's
PSNR is therefore capped at :data:`PSNR_CAP_DB` = 100 dB, i.e. its MSE floored at 1e-10 — far above
any real reconstruction (8-bit quantisation alone costs about 59 dB).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.image import StructuralSimilarityIndexMeasure

from advmed.utils.files import write_text
from advmed.utils.loggers import markdown_table
from advmed.utils.tables import Table, write_csv

PSNR_CAP_DB = 100.0
"""Upper bound of a single image's PSNR (dB): 10 * log10(1 / MSE) with MSE floored at 1e-10."""


def _check_pair(prediction: Tensor, target: Tensor, name: str = "prediction") -> None:
    if prediction.shape != target.shape or prediction.ndim != 4:
        raise ValueError(
            f"{name} and target must have the same shape (N, C, H, W); got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}. Upscale the {name} to the target's size first."
        )
    for label, images in ((name, prediction), ("target", target)):
        if not images.is_floating_point():
            raise ValueError(f"{label} must be float images in [0, 1]; got dtype {images.dtype}. Use x.float() / 255.")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"{label} must lie in [0, 1]; got values in [{images.min().item():.4g}, {images.max().item():.4g}]. "
                "Clamp the output or undo its normalisation."
            )


def capped_psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """PSNR (dB) of each image pair, (N,), for [0, 1] images, at most :data:`PSNR_CAP_DB`."""
    psnr = peak_signal_noise_ratio(
        prediction.double(), target.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return psnr.clamp(max=PSNR_CAP_DB)


class _PairScores(nn.Module):
    """Mean per-image PSNR and SSIM of one kind of output against the targets."""

    def __init__(self) -> None:
        super().__init__()
        self.psnr = MeanMetric()
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)  # keeps the sum of per-image SSIMs

    def update(self, prediction: Tensor, target: Tensor) -> None:
        self.psnr.update(capped_psnr(prediction, target))
        # float64: in float32 two identical flat tiles score 0.9996, not 1 (the constants C1, C2 are ~1e-4).
        self.ssim.update(prediction.double(), target.double())

    def compute(self) -> tuple[float, float]:
        if self.psnr.update_count == 0:
            return math.nan, math.nan
        return float(self.psnr.compute()), float(self.ssim.compute())

    def reset(self) -> None:
        self.psnr.reset()
        self.ssim.reset()


class SuperResolutionScores(nn.Module):
    """Mean PSNR and SSIM of a model's upscaled images and of a baseline's, on the same images.

    ``update(prediction, target, baseline)`` takes [0, 1] float images (N, C, H, W) of one shape (the
    baseline is e.g. :func:`advmed.nets.srgan_pairs.bicubic_upscale` of the low-resolution input); ``compute()`` returns
    ``{"psnr", "ssim", "<baseline>_psnr", "<baseline>_ssim"}`` as floats (NaN before any update);
    ``reset()`` starts a new evaluation. Needs H, W >= 11 (SSIM's Gaussian window).
    """

    def __init__(self, baseline_name: str = "bicubic") -> None:
        super().__init__()
        self.baseline_name = str(baseline_name)
        self.model_scores = _PairScores()
        self.baseline_scores = _PairScores()

    @torch.no_grad()
    def update(self, prediction: Tensor, target: Tensor, baseline: Tensor) -> None:
        _check_pair(prediction, target)
        _check_pair(baseline, target, name=self.baseline_name)
        device = self.model_scores.psnr.device  # where the running sums live (images may come from elsewhere)
        target = target.to(device)
        self.model_scores.update(prediction.to(device), target)
        self.baseline_scores.update(baseline.to(device), target)

    def compute(self) -> dict[str, float]:
        psnr, ssim = self.model_scores.compute()
        baseline_psnr, baseline_ssim = self.baseline_scores.compute()
        return {
            "psnr": psnr, "ssim": ssim,
            f"{self.baseline_name}_psnr": baseline_psnr, f"{self.baseline_name}_ssim": baseline_ssim,
        }

    def reset(self) -> None:
        self.model_scores.reset()
        self.baseline_scores.reset()


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, Tensor) and value.numel() == 1 else value


def write_quality_report(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> tuple[Path, Path]:
    """Write score dicts (one row each, e.g. ``{"model": "srgan", **scores.compute()}``) as
    ``path`` with suffix ``.csv`` and ``.md``; columns in order of first appearance, a missing
    value left empty. Returns (csv path, markdown path)."""
    if not rows:
        raise ValueError(f"no rows to write to {path}: pass at least one dict of scores")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = Table(columns, [[_plain(row.get(column, "")) for column in columns] for row in rows])
    path = Path(path)
    csv_path = write_csv(path.with_suffix(".csv"), table)
    md_path = write_text(path.with_suffix(".md"), markdown_table(table.columns, table.rows))
    return csv_path, md_path
