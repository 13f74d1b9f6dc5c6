"""The super-resolution figure of Lockshin et al. 2022 (Fig. 5): low-resolution input, bicubic
upscaling, SRGAN and the high-resolution original side by side (matplotlib's Figure API: no display
and no global backend change)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from advmed.metrics.image_quality import capped_psnr
from advmed.utils.files import atomic_write

COLUMNS = ("I_LR (nearest)", "bicubic", "SRGAN", "I_HR")


def _to_hwc(image: torch.Tensor):
    image = image.detach().float().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def super_resolution_grid(path: str | Path, lr: torch.Tensor, bicubic: torch.Tensor, sr: torch.Tensor,
                          hr: torch.Tensor) -> Path:
    """Write a PNG grid, one row per tile, columns ``I_LR`` | bicubic | SRGAN | ``I_HR``.

    All images are [0, 1] floats (N, C, H, W); ``lr`` is the low-resolution input and the others
    share ``hr``'s size. ``I_LR`` is drawn with nearest-neighbour pixels at the size of the others,
    so that its real resolution shows; the bicubic and SRGAN panels carry their PSNR against
    ``I_HR`` (dB), the figure's own check of what the table reports.
    """
    if not len(lr) == len(bicubic) == len(sr) == len(hr) or len(hr) == 0:
        raise ValueError(f"one or more tiles of each kind are needed, got {len(lr)} I_LR, {len(bicubic)} bicubic, "
                         f"{len(sr)} SRGAN and {len(hr)} I_HR images")
    psnr = {"bicubic": capped_psnr(bicubic.float().cpu(), hr.float().cpu()),
            "SRGAN": capped_psnr(sr.float().cpu(), hr.float().cpu())}
    n = len(hr)
    fig = Figure(figsize=(8.0, 2.1 * n + 0.4))
    axes = fig.subplots(n, len(COLUMNS), squeeze=False)
    for row in range(n):
        for col, (name, image) in enumerate(zip(COLUMNS, (lr, bicubic, sr, hr), strict=True)):
            ax = axes[row, col]
            # nearest: I_LR's pixels stay visible as blocks instead of being smoothed by the viewer
            ax.imshow(_to_hwc(image[row]), interpolation="nearest", cmap="gray" if image.shape[1] == 1 else None,
                      extent=(0, hr.shape[-1], hr.shape[-2], 0))
            label = name.split(" ")[0]
            title = f"{name}\n" if row == 0 else ""
            if label in psnr:
                title += f"{float(psnr[label][row]):.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return Path(path)
