"""Figures of attacked images (matplotlib's Figure API: no display and no global backend change)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from advmed.utils.files import atomic_write


def _to_hwc(img: torch.Tensor):
    img = img.detach().float().cpu().clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def adversarial_grid(
    path: str | Path,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    pred: torch.Tensor,
    adv_pred: torch.Tensor,
    class_names: Sequence[str] | None = None,
    amplify: float = 10.0,
    region: torch.Tensor | None = None,
) -> Path:
    """Write a PNG grid: one row per image, columns clean | adversarial | amplified difference.

    The difference is shown as ``0.5 + amplify * (x_adv - x)`` so that small perturbations
    (eps of a few percent) become visible; titles give the true and predicted labels. With
    ``region`` (bool ``(N, 1, H, W)``, a patch attack's mask) its outlines are drawn on the clean
    and adversarial images.
    """

    def name(i: int) -> str:
        return class_names[i] if class_names else str(i)

    n = len(x)
    fig = Figure(figsize=(6.0, 2.1 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        diff = (0.5 + amplify * (x_adv[row] - x[row])).clamp(0, 1)
        panels = [
            (x[row], f"true {name(int(y[row]))} | pred {name(int(pred[row]))}"),
            (x_adv[row], f"adversarial: pred {name(int(adv_pred[row]))}"),
            (diff, f"difference x{amplify:g}"),
        ]
        for col, (ax, (img, title)) in enumerate(zip(axes[row], panels)):
            ax.imshow(_to_hwc(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            if region is not None and col < 2 and region[row].any():
                ax.contour(region[row, 0].float().cpu().numpy(), levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_title(title, fontsize=7, color="red" if "adversarial" in title and adv_pred[row] != y[row] else "black")
            ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return Path(path)
