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


def _overlay(ax, image: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """The image in gray with its label map on top (background transparent, one colour per class)."""
    import numpy as np
    from matplotlib import colormaps

    ax.imshow(_to_hwc(image), cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=1)
    colours = colormaps["tab10"](np.arange(max(num_classes, 2)) % 10)
    colours[0, 3] = 0.0  # background shows the image
    colours[1:, 3] = 0.45
    ax.imshow(colours[labels.cpu().numpy()], interpolation="nearest")


def segmentation_grid(
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
    """Write a PNG grid for segmentation: one row per image, columns image | ground truth | clean
    prediction | adversarial image | adversarial prediction | amplified difference.

    Label maps are drawn over the image, one colour per class (legend in the first row).
    ``region`` is accepted for symmetry with :func:`adversarial_grid` and drawn as outlines.
    """
    from matplotlib.patches import Patch

    num_classes = len(class_names) if class_names else int(max(y.max(), pred.max(), adv_pred.max())) + 1
    n = len(x)
    fig = Figure(figsize=(12.0, 2.2 * n + 0.4))
    axes = fig.subplots(n, 6, squeeze=False)
    titles = ("image", "ground truth", "prediction", "adversarial", "adversarial prediction", f"difference x{amplify:g}")
    for row in range(n):
        _overlay(axes[row, 0], x[row], torch.zeros_like(y[row]), num_classes)
        _overlay(axes[row, 1], x[row], y[row], num_classes)
        _overlay(axes[row, 2], x[row], pred[row], num_classes)
        _overlay(axes[row, 3], x_adv[row], torch.zeros_like(y[row]), num_classes)
        _overlay(axes[row, 4], x_adv[row], adv_pred[row], num_classes)
        diff = (0.5 + amplify * (x_adv[row] - x[row])).clamp(0, 1)
        axes[row, 5].imshow(_to_hwc(diff), cmap="gray" if diff.shape[0] == 1 else None, vmin=0, vmax=1)
        for col, ax in enumerate(axes[row]):
            if region is not None and col in (0, 3) and region[row].any():
                ax.contour(region[row, 0].float().cpu().numpy(), levels=[0.5], colors="cyan", linewidths=0.6)
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
            ax.axis("off")
    if class_names:
        from matplotlib import colormaps

        colours = colormaps["tab10"](range(1, len(class_names)))
        handles = [Patch(color=c, label=name) for c, name in zip(colours, class_names[1:])]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 if class_names else 0, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return Path(path)


def deformation_grid(
    path: str | Path,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    pred: torch.Tensor,
    adv_pred: torch.Tensor,
    deformation: torch.Tensor,
    intensity: torch.Tensor,
    class_names: Sequence[str] | None = None,
    **_: object,
) -> Path:
    """Write the PNG grid of Chen et al. 2019 Fig. 2/3: one row per slice, columns I0 | S_GT | S0 |
    I_DV | V | |D| | S_DV. V is drawn around 0 (gray) on the symmetric range of the grid's largest
    |V|, |D| (pixels) from 0 to the grid's largest displacement; both ranges are in the titles."""
    num_classes = len(class_names) if class_names else int(max(y.max(), pred.max(), adv_pred.max())) + 1
    v = intensity.detach().float().cpu().mean(1)  # (N, H, W)
    d = deformation.detach().float().cpu().norm(dim=1)  # (N, H, W), pixels
    v_max, d_max = max(float(v.abs().max()), 1e-6), max(float(d.max()), 1e-6)
    titles = ("I0", "S_GT", "S0", "I_DV", f"V (±{v_max:.3f})", f"|D| (0-{d_max:.2f} px)", "S_DV")
    n = len(x)
    fig = Figure(figsize=(14.0, 2.1 * n + 0.4))
    axes = fig.subplots(n, 7, squeeze=False)
    for row in range(n):
        _overlay(axes[row, 0], x[row], torch.zeros_like(y[row]), num_classes)
        _overlay(axes[row, 1], x[row], y[row], num_classes)
        _overlay(axes[row, 2], x[row], pred[row], num_classes)
        _overlay(axes[row, 3], x_adv[row], torch.zeros_like(y[row]), num_classes)
        axes[row, 4].imshow(v[row].numpy(), cmap="coolwarm", vmin=-v_max, vmax=v_max)
        axes[row, 5].imshow(d[row].numpy(), cmap="magma", vmin=0, vmax=d_max)
        _overlay(axes[row, 6], x_adv[row], adv_pred[row], num_classes)
        for col, ax in enumerate(axes[row]):
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return Path(path)
