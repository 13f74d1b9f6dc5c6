"""Per-class sample grids of a class-conditional generator during training (Lockshin et al. 2022,
Fig. 4), saved as PNG and handed to whatever logger is configured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from advmed.utils.files import atomic_write
from advmed.utils.loggers import log_image

PAD = 2          # white pixels between tiles and around the grid
MIN_TILE = 64    # tiles smaller than this are enlarged by an integer factor (nearest) to be readable


def tile_scale(image_size: int) -> int:
    """The integer enlargement of a tile of side ``image_size`` in the grid."""
    return max(1, -(-MIN_TILE // image_size))


def label_width(class_names: Sequence[str]) -> int:
    """Width in pixels of the column of class names left of the tiles."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return int(max(probe.textlength(name, font=font) for name in class_names)) + 2 * PAD + 4


def tile_origin(row: int, col: int, tile: int, left: int) -> tuple[int, int]:
    """``(x, y)`` of the top-left pixel of tile (``row``, ``col``) of side ``tile`` after a label column ``left`` wide."""
    return left + PAD + col * (tile + PAD), PAD + row * (tile + PAD)


def class_grid(images: torch.Tensor, class_names: Sequence[str], samples_per_class: int) -> Image.Image:
    """An RGB grid, one row per class (named on the left), ``samples_per_class`` columns, from [0, 1]
    images (K * M, C, R, R) ordered class by class. Tiles are rounded to 8 bits, enlarged by
    :func:`tile_scale` (nearest) and laid out by :func:`tile_origin`."""
    rows, cols = len(class_names), samples_per_class
    if images.ndim != 4 or images.shape[0] != rows * cols or images.shape[1] not in (1, 3):
        raise ValueError(f"class_grid needs {rows} x {cols} images (N, 1 or 3, R, R), got {tuple(images.shape)}")
    scale = tile_scale(images.shape[-1])
    tiles = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    tiles = tiles.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    tile, left = tiles.shape[-1], label_width(class_names)
    canvas = np.full((PAD + rows * (tile + PAD), left + PAD + cols * (tile + PAD), 3), 255, dtype=np.uint8)
    for index, image in enumerate(tiles.permute(0, 2, 3, 1).numpy()):
        x, y = tile_origin(index // cols, index % cols, tile, left)
        canvas[y:y + tile, x:x + tile] = image
    grid = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
    for row, name in enumerate(class_names):
        draw.text((PAD + 2, tile_origin(row, 0, tile, left)[1] + tile // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
    return grid


class ClassSamplesCallback(L.Callback):
    """After every ``every_n_epochs``-th training epoch and at the end of the fit, a grid of
    ``samples_per_class`` generated tiles per class (rows = classes) at
    ``<output_dir>/samples/epoch_XXX.png`` (XXX = epochs completed), logged as ``samples/classes``.

    The latents are the same in every grid (a generator seeded with ``seed``), so grids show how the
    same draws evolve. Sampling is the module's ``sample`` (EMA generator, stored noise, the model's
    ``truncation_psi``). Rank 0 only.
    """

    def __init__(self, output_dir: str, every_n_epochs: int = 1, samples_per_class: int = 8, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("every_n_epochs", every_n_epochs), ("samples_per_class", samples_per_class)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"callbacks.class_samples.{name}={value} must be an integer >= 1")
        self.dir = Path(output_dir) / "samples"
        self.every_n_epochs, self.samples_per_class, self.seed = every_n_epochs, samples_per_class, seed
        self._completed = 0
        self._written: set[int] = set()

    def path(self, epochs_completed: int) -> Path:
        return self.dir / f"epoch_{epochs_completed:03d}.png"

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._completed = trainer.current_epoch + 1
        if self._completed % self.every_n_epochs == 0:
            self.write(trainer, pl_module, self._completed)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._completed not in self._written:
            self.write(trainer, pl_module, self._completed)

    def write(self, trainer, pl_module, epochs_completed: int) -> Path | None:
        """Sample and save the grid after ``epochs_completed`` epochs; returns its path (None off rank 0)."""
        self._written.add(epochs_completed)
        if not trainer.is_global_zero:
            return None
        names = list(pl_module.hparams.class_names)
        labels = torch.arange(len(names)).repeat_interleave(self.samples_per_class)
        images = pl_module.sample(labels, generator=torch.Generator().manual_seed(self.seed))
        grid = class_grid(images, names, self.samples_per_class)
        path = atomic_write(self.path(epochs_completed), lambda tmp: grid.save(tmp, format="PNG"))
        log_image(trainer.loggers, "samples/classes", path)
        return path
