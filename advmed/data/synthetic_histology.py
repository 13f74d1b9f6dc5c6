"""Procedural H&E-like tissue tiles in the nine NCT-CRC-HE classes: the embedded default dataset.

Images are rendered in optical-density space (Beer-Lambert): per-pixel concentrations of
haematoxylin (nuclei, purple-blue), eosin (cytoplasm, stroma, muscle: pink), a pale blue-grey
mucin and a neutral grey are mixed through per-image jittered stain vectors. Each class is a
texture built from a few primitives -- nuclei as blurred random impulses (or, for packed
lymphocytes, cellular noise on a jittered lattice), fibres as phase-warped stripes, fat and glands
from jittered-lattice Voronoi cells, mucus and necrosis from filtered noise --
with random density, size, orientation, stain strength, blur and noise per image. The class mean
colours overlap on purpose: a classifier has to learn texture, not colour.

Image ``index`` of a split depends only on ``(seed, split, index)``: its label is ``index % 9`` and
all its randomness comes from a generator seeded by that triple; rendering runs in fixed chunks of
indices, so neither the split's count nor the other splits change it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from advmed.data.base import ClassificationDataModule, LabelledDataset, TensorImageDataset

CLASS_NAMES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_CHUNK = 9 * 16  # indices rendered together; a multiple of 9 so every chunk holds every class

# Random numbers per image: scalars for parameters, seed jitters for Voronoi grids, noise maps.
_N_SCALARS, _N_MAPS = 40, 6
_N_GLOBAL_SCALARS = 14  # stain jitter (6), stain strength (2), white level (4), blur, noise
_GRID = 6  # Voronoi seeds on a jittered _GRID x _GRID lattice
_N_SEEDS = _GRID * _GRID

# Stain optical-density directions (R, G, B): haematoxylin and eosin after Ruifrok & Johnston,
# mucin as the OD of a pale blue-grey, and neutral grey for glass, dust and out-of-focus areas.
_STAINS = torch.tensor(
    [
        [0.650, 0.704, 0.286],
        [0.072, 0.990, 0.105],
        [0.74, 0.58, 0.34],
        [0.577, 0.577, 0.577],
    ]
)


def generate_histology(seed: int, split: str, indices: torch.Tensor, image_size: int) -> torch.Tensor:
    """Render images ``indices`` of ``split`` as uint8 (N, 3, S, S); labels are ``indices % 9``."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    out = torch.empty(len(indices), 3, image_size, image_size, dtype=torch.uint8)
    if len(indices) == 0:
        return out
    with _single_thread():
        for chunk in torch.unique(indices // _CHUNK).tolist():
            # Render the whole chunk, so each image always shares its batch with the same neighbours:
            # float results then cannot depend on which other indices were asked for.
            chunk_indices = torch.arange(chunk * _CHUNK, (chunk + 1) * _CHUNK)
            images = _render(seed, _SPLIT_IDS[split], chunk_indices, image_size)
            wanted = (indices // _CHUNK) == chunk
            out[wanted] = images[indices[wanted] - chunk * _CHUNK]
    return out


@contextmanager
def _single_thread():
    """Run on one intra-op thread, restoring the setting afterwards.

    Rendering is many small tensor ops, which extra threads do not speed up; on a busy machine
    their synchronisation made it several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _render(seed: int, split_id: int, indices: torch.Tensor, size: int) -> torch.Tensor:
    scalars, seeds, maps = _draw(seed, split_id, indices, size)
    labels = indices % len(CLASS_NAMES)
    # Class textures and the shared imaging step draw from disjoint parts of each image's numbers.
    texture = _Draws(scalars[:, :-_N_GLOBAL_SCALARS], seeds, maps[:, :-1])
    imaging = _Draws(scalars[:, -_N_GLOBAL_SCALARS:], seeds, maps[:, -1:])
    od = torch.empty(len(indices), 4, size, size)
    for label, renderer in enumerate(_RENDERERS):
        members = torch.nonzero(labels == label).flatten()
        if len(members):
            d = texture.subset(members)
            scale = size / 224.0 * d.uniform(0.8, 1.25)  # sizes below are in px of a 224-px tile
            od[members] = torch.stack(
                [t.expand(len(members), size, size) for t in renderer(d, size, scale)], 1
            )
    return _to_rgb(od, imaging)


def _draw(seed: int, split_id: int, indices: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """All random numbers of each image, from a generator seeded by (seed, split, index) alone."""
    n_total = _N_SCALARS + 2 * _N_SEEDS + _N_MAPS * size * size
    values = torch.empty(len(indices), n_total)
    generator = torch.Generator()
    for row, index in enumerate(indices.tolist()):
        # SeedSequence hashes the triple, so neighbouring indices get unrelated streams.
        generator.manual_seed(
            int(np.random.SeedSequence([seed, split_id, index]).generate_state(1, np.uint64)[0])
        )
        torch.rand(n_total, generator=generator, out=values[row])
    scalars, seeds, maps = values.split([_N_SCALARS, 2 * _N_SEEDS, _N_MAPS * size * size], dim=1)
    return scalars, seeds.reshape(-1, _N_SEEDS, 2), maps.reshape(-1, _N_MAPS, size, size)


class _Draws:
    """Hands out an image batch's random numbers in a fixed order, one parameter at a time."""

    def __init__(self, scalars: torch.Tensor, seeds: torch.Tensor, maps: torch.Tensor) -> None:
        self.scalars, self.seeds, self.maps = scalars, seeds, maps
        self._next_scalar = 0
        self._next_map = 0

    def subset(self, rows: torch.Tensor) -> _Draws:
        return _Draws(self.scalars[rows], self.seeds[rows], self.maps[rows])

    def uniform(self, low: float, high: float) -> torch.Tensor:
        """One value per image, uniform in [low, high), shape (B, 1, 1) to broadcast over maps."""
        column = self.scalars[:, self._next_scalar]
        self._next_scalar += 1
        return (low + (high - low) * column).view(-1, 1, 1)

    def noise(self) -> torch.Tensor:
        """A fresh uniform [0, 1) map per image, (B, S, S)."""
        noise = self.maps[:, self._next_map]
        self._next_map += 1
        return noise


# --------------------------------------------------------------------------------------------
# Texture primitives, vectorised over the batch; sizes are in pixels, shapes (B, 1, 1) or scalars.


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(size, dtype=torch.float32)
    return torch.meshgrid(coords, coords, indexing="ij")


def _gaussian_filter(field: torch.Tensor, sigma_along, sigma_across, angle) -> torch.Tensor:
    """Blur (B, [C,] S, S) with an oriented anisotropic Gaussian (periodic borders, via FFT)."""
    size = field.shape[-1]
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    f_along = fx * cos + fy * sin
    f_across = -fx * sin + fy * cos
    response = torch.exp(-2 * math.pi**2 * ((sigma_along * f_along) ** 2 + (sigma_across * f_across) ** 2))
    if field.ndim == 4:
        response = response[:, None]
    return torch.fft.irfft2(torch.fft.rfft2(field) * response, s=(size, size))


def _smooth(noise: torch.Tensor, sigma, aniso=1.0, angle=0.0) -> torch.Tensor:
    """Gaussian random field with correlation length ``sigma``, normalised to mean 0, std 1."""
    angle = torch.as_tensor(angle, dtype=torch.float32)
    field = _gaussian_filter(noise - 0.5, sigma * aniso, sigma, angle)
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    return field / (field.std(dim=(-2, -1), keepdim=True) + 1e-8)


def _blobs(impulses: torch.Tensor, sigma_along, sigma_across, angle) -> torch.Tensor:
    """Turn an impulse map into Gaussian blobs of peak height = impulse amplitude."""
    sigma_along, sigma_across = sigma_along.clamp(min=0.7), sigma_across.clamp(min=0.7)
    blurred = _gaussian_filter(impulses, sigma_along, sigma_across, angle)
    return blurred * (2 * math.pi * sigma_along * sigma_across)


def _spots(noise, count, sigma_along, sigma_across, angle, amp_low=1.0, amp_high=1.0) -> torch.Tensor:
    """Blobs at about ``count`` uniformly random places of the tile (nuclei, specks).

    Impulses fall where the uniform ``noise`` is below count / S^2; the value below the threshold
    doubles as each blob's amplitude, so blob sizes vary within an image.
    """
    p = count / noise.shape[-1] ** 2
    impulses = torch.where(noise < p, amp_low + (amp_high - amp_low) * noise / p, 0.0)
    return _blobs(impulses, sigma_along, sigma_across, angle)


def _lattice_neighbours(table: torch.Tensor, spacing, jitter: float, size: int):
    """Yield, for every pixel, each of the 9 jittered lattice points of its own and adjacent cells.

    ``table`` (B, >= 2, G*G) holds uniforms per lattice point, the first two moving it by up to
    ``jitter / 2`` spacing in y and x. Point (i, j) sits at ((i - 1 + 0.5 + jitter * (u - 0.5)) * spacing),
    so cells start one spacing before the tile. Yields ``(y, x, point)``: (B, S, S) coordinates
    of the point and its flat index into ``table``, for callers that read more columns.
    """
    grid = math.isqrt(table.shape[-1])
    yy, xx = _grid(size)
    cell_y, cell_x = (yy / spacing).long() + 1, (xx / spacing).long() + 1
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            i, j = (cell_y + dy).clamp(0, grid - 1), (cell_x + dx).clamp(0, grid - 1)
            point = (i * grid + j).flatten(1)
            y = (i - 0.5 + jitter * (table[:, 0].gather(1, point).view_as(i) - 0.5)) * spacing
            x = (j - 0.5 + jitter * (table[:, 1].gather(1, point).view_as(j) - 0.5)) * spacing
            yield y, x, point


def _packed_spots(noise, spacing, fill, sigma_along, sigma_across, angle) -> torch.Tensor:
    """Densely packed but separate blobs (peak 1): cellular noise on a jittered lattice.

    Lattice points ``spacing`` px apart (at least 2.5) move by up to 0.3 spacing and are kept
    with probability ``fill``. Each pixel takes the strongest blob of the 9 nearest lattice
    points (max, not sum, so neighbours never fuse). The lattice size depends on S only, so each
    point always reads the same noise values.
    """
    batch, size = noise.shape[0], noise.shape[-1]
    grid = int(size / 2.5) + 3
    table = noise.flatten(1)[:, : 3 * grid * grid].view(batch, 3, -1)
    sigma_along, sigma_across = sigma_along.clamp(min=0.5), sigma_across.clamp(min=0.5)
    cos, sin = torch.cos(angle), torch.sin(angle)
    yy, xx = _grid(size)
    field = torch.zeros(batch, size, size)
    for y, x, point in _lattice_neighbours(table, spacing.clamp(min=2.5), 0.6, size):
        along = (xx - x) * cos + (yy - y) * sin
        across = -(xx - x) * sin + (yy - y) * cos
        blob = torch.exp(-0.5 * ((along / sigma_along) ** 2 + (across / sigma_across) ** 2))
        field = torch.maximum(field, blob * (table[:, 2].gather(1, point).view_as(y) < fill))
    return field


def _soft(x: torch.Tensor, threshold, width) -> torch.Tensor:
    """Smooth step from 0 to 1 around ``threshold`` (anti-aliased masks)."""
    return torch.sigmoid((x - threshold) / width)


def _voronoi(seeds: torch.Tensor, spacing, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to the nearest and second-nearest seed of a jittered lattice (cells: fat, glands).

    ``spacing`` must be at least S / 3.5 so that the _GRID x _GRID seed table covers the tile.
    """
    yy, xx = _grid(size)
    dist = torch.stack(
        [
            torch.hypot(yy - y, xx - x)
            for y, x, _ in _lattice_neighbours(seeds.transpose(1, 2), spacing, 0.8, size)
        ],
        1,
    )
    nearest = torch.topk(dist, 2, dim=1, largest=False).values
    return nearest[:, 0], nearest[:, 1]


def _stripes(d: _Draws, size: int, angle, period, waviness, wave_sigma, sharpness) -> torch.Tensor:
    """Fibres along ``angle``: a sinusoid across them whose phase bends with a smooth random field."""
    yy, xx = _grid(size)
    across = -xx * torch.sin(angle) + yy * torch.cos(angle)
    phase = 2 * math.pi * across / period + waviness * _smooth(d.noise(), wave_sigma)
    return (0.5 + 0.5 * torch.cos(phase)) ** sharpness


def _angle(d: _Draws) -> torch.Tensor:
    return d.uniform(0.0, math.pi)


# --------------------------------------------------------------------------------------------
# Class renderers: (draws, size, scale = px per 224-px-tile px) -> H, E, mucin, grey densities.


def _adipose(d: _Draws, size: int, k):
    spacing = d.uniform(80, 150) * k
    d1, d2 = _voronoi(d.seeds, spacing, size)
    width = (d.uniform(1.5, 3.0) * k).clamp(min=0.9)
    membrane = torch.exp(-(((d2 - d1) / width) ** 2))
    membrane = membrane * _soft(_smooth(d.noise(), 6 * k), d.uniform(-1.6, -0.6), 0.3)  # torn membranes
    flat_nuclei = _spots(d.noise(), d.uniform(2, 12), 7 * k, 2 * k, _angle(d)) * membrane
    h = _soft(flat_nuclei, 0.3, 0.1) * d.uniform(0.7, 1.3) + membrane * 0.05
    e = membrane * d.uniform(0.35, 0.9) + d.uniform(0.0, 0.08)
    return h, e, torch.zeros_like(h), d.uniform(0.0, 0.12) + 0.03 * _smooth(d.noise(), 20 * k)


def _background(d: _Draws, size: int, k):
    grey = d.uniform(0.02, 0.5) * (1 + d.uniform(0.0, 0.4) * _smooth(d.noise(), 40 * k))
    specks = _spots(
        d.noise(), d.uniform(0, 25), d.uniform(1.5, 5) * k, d.uniform(1.5, 4) * k, _angle(d), 0.3, 1.0
    )
    grey = grey + specks * d.uniform(0.2, 0.8)
    tint = d.uniform(0.0, 0.12)
    return tint * 0.5, tint, torch.zeros_like(grey), grey


def _debris(d: _Draws, size: int, k):
    patches = _soft(_smooth(d.noise(), d.uniform(6, 14) * k), d.uniform(-0.5, 0.6), 0.35)
    fragments = _spots(
        d.noise(), d.uniform(120, 380), d.uniform(1.5, 3.5) * k, d.uniform(1.2, 2.5) * k, _angle(d), 0.3, 1.4
    )
    broken = _soft(_smooth(d.noise(), 1.2 * k), -0.2, 0.3)  # karyorrhexis: nuclei fall apart
    pyknotic = _spots(d.noise(), d.uniform(3, 20), 4 * k, 3.5 * k, _angle(d), 0.6, 1.3)
    h = _soft(fragments * broken + pyknotic, 0.45, 0.12) * d.uniform(0.8, 1.6) + 0.1 * patches
    e = patches * d.uniform(0.25, 0.8) + d.uniform(0.02, 0.15)
    return h, e, d.uniform(0.0, 0.2) * (1 - patches), torch.zeros_like(h)


def _lymphocytes(d: _Draws, size: int, k):
    spacing = d.uniform(10, 13.5) * k
    nuclei = _packed_spots(
        d.noise(), spacing, d.uniform(0.65, 0.95), d.uniform(3.8, 4.5) * k, d.uniform(3.6, 4.2) * k, _angle(d)
    )
    mask = _soft(nuclei, 0.6, 0.08)
    chromatin = 1 + 0.15 * _smooth(d.noise(), 1.0 * k)
    h = mask * chromatin * d.uniform(1.2, 2.2) + d.uniform(0.03, 0.15)
    e = d.uniform(0.08, 0.35) * (1 - 0.5 * mask)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


def _mucus(d: _Draws, size: int, k):
    angle = _angle(d)
    streaks = _smooth(d.noise(), d.uniform(3, 8) * k, d.uniform(2, 6), angle)
    pools = _soft(_smooth(d.noise(), 25 * k), d.uniform(-1.0, 0.6), 0.4)
    mucin = d.uniform(0.15, 0.6) * (0.55 + 0.25 * streaks) * (0.4 + 0.6 * pools)
    cells = _spots(d.noise(), d.uniform(0, 10), 4.5 * k, 4 * k, angle, 0.7, 1.2)
    h = _soft(cells, 0.5, 0.1) * d.uniform(0.8, 1.4) + mucin * d.uniform(0.05, 0.3)
    e = d.uniform(0.0, 0.15) * _soft(streaks, 0.8, 0.3)
    return h, e, mucin.clamp(min=0), torch.zeros_like(h)


def _muscle(d: _Draws, size: int, k):
    angle = _angle(d)
    fibres = _stripes(
        d, size, angle, (d.uniform(8, 14) * k).clamp(min=2.6), d.uniform(0.3, 1.2), 30 * k, d.uniform(1, 3)
    )
    nuclei = _spots(
        d.noise(), d.uniform(8, 25), d.uniform(11, 16) * k, d.uniform(2.2, 3.0) * k, angle, 0.9, 1.3
    )
    h = _soft(nuclei, 0.5, 0.1) * d.uniform(0.9, 1.6) + d.uniform(0.0, 0.06)
    e = d.uniform(0.45, 1.0) * (0.5 + 0.5 * fibres)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


def _normal_mucosa(d: _Draws, size: int, k):
    spacing = d.uniform(110, 180) * k
    d1, _ = _voronoi(d.seeds, spacing, size)
    r = d1 + 0.08 * spacing * _smooth(d.noise(), 12 * k)  # roundish, not perfect circles
    outer = d.uniform(0.34, 0.44) * spacing
    lumen = d.uniform(0.3, 0.55) * outer
    w = (1.0 * k).clamp(min=0.5)
    gland = _soft(outer - r, 0, w)
    epithelium = gland * _soft(r - lumen, 0, w)
    basal = epithelium * _soft(r - (outer - 0.35 * (outer - lumen)), 0, w)
    epithelial_nuclei = _spots(d.noise(), d.uniform(200, 400), 5 * k, 3.2 * k, _angle(d), 0.9, 1.2) * basal
    goblets = _soft(_spots(d.noise(), d.uniform(40, 90), 5 * k, 4.5 * k, _angle(d)), 0.5, 0.1) * (
        epithelium - basal
    ).clamp(min=0)
    stromal_nuclei = _spots(d.noise(), d.uniform(15, 50), 4.5 * k, 4 * k, _angle(d), 0.8, 1.2) * (1 - gland)
    h = _soft(epithelial_nuclei + stromal_nuclei, 0.5, 0.1) * d.uniform(1.0, 1.7) + 0.1 * epithelium
    e = (d.uniform(0.15, 0.5) * (1 - gland) + d.uniform(0.2, 0.45) * epithelium) * (1 - 0.8 * goblets)
    return h, e, goblets * 0.3 + 0.05 * (gland - epithelium).clamp(min=0), torch.zeros_like(h)


def _stroma(d: _Draws, size: int, k):
    angle = _angle(d)
    fibres = _stripes(
        d,
        size,
        angle,
        (d.uniform(10, 20) * k).clamp(min=3.0),
        d.uniform(2.5, 6.0),
        d.uniform(18, 35) * k,
        d.uniform(2, 5),
    )
    loose = _soft(_smooth(d.noise(), 7 * k, 3.0, angle), d.uniform(-0.8, 0.3), 0.4)
    nuclei = _spots(
        d.noise(), d.uniform(4, 16), d.uniform(8, 12) * k, d.uniform(1.8, 2.6) * k, angle, 0.9, 1.3
    )
    h = _soft(nuclei, 0.5, 0.1) * d.uniform(0.9, 1.6) + d.uniform(0.0, 0.06)
    e = d.uniform(0.3, 0.9) * fibres * loose + d.uniform(0.05, 0.3)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


def _tumour(d: _Draws, size: int, k):
    nuclei = sum(
        _spots(d.noise(), d.uniform(25, 55), d.uniform(7, 11) * k, d.uniform(4.5, 7) * k, _angle(d), 0.6, 1.6)
        for _ in range(2)
    )
    nuclei = nuclei + 0.3 * _smooth(d.noise(), 2.5 * k)  # irregular, pleomorphic outlines
    mask = _soft(nuclei, 0.5, 0.1)
    lumen = _soft(_smooth(d.noise(), 14 * k), d.uniform(0.8, 2.2), 0.25)  # irregular glands, necrosis
    chromatin = 1 + 0.25 * _smooth(d.noise(), 1.0 * k)
    h = (mask * chromatin * d.uniform(0.9, 1.6) + d.uniform(0.1, 0.3)) * (1 - 0.85 * lumen)
    e = d.uniform(0.2, 0.5) * (1 - 0.85 * lumen)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


_RENDERERS = (_adipose, _background, _debris, _lymphocytes, _mucus, _muscle, _normal_mucosa, _stroma, _tumour)


def _to_rgb(od: torch.Tensor, d: _Draws) -> torch.Tensor:
    """Stain densities (B, 4, S, S) -> uint8 RGB, with per-image stains, light, blur and noise."""
    batch = od.shape[0]
    jitter = torch.stack([d.uniform(-0.12, 0.12).flatten() for _ in range(6)], dim=1).view(batch, 2, 3)
    stains = _STAINS.expand(batch, 4, 3).clone()
    stains[:, :2] = F.normalize(stains[:, :2] + jitter, dim=-1)  # stain hue varies between slides
    strength = torch.cat([d.uniform(0.5, 1.7), d.uniform(0.5, 1.7), torch.ones(batch, 2, 1)], dim=1)
    density = torch.einsum("bksw,bkc->bcsw", od.clamp(min=0) * strength[..., None], stains)
    white = d.uniform(0.8, 1.0).view(-1, 1, 1, 1) * (
        1 + torch.stack([d.uniform(-0.03, 0.03) for _ in range(3)], 1)
    )
    rgb = white * torch.exp(-density)
    rgb = _gaussian_filter(rgb, *(2 * [d.uniform(0.2, 0.9).view(-1, 1, 1)]), torch.zeros(batch, 1, 1))
    rgb = rgb + d.uniform(0.004, 0.02).view(-1, 1, 1, 1) * (d.noise()[:, None] - 0.5) * math.sqrt(12)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


class SyntheticHistologyDataModule(ClassificationDataModule):
    """Procedural 9-class H&E-like tiles (classes and order of NCT-CRC-HE-100K); no files needed.

    Each split is rendered once, at the first ``setup`` that needs it, into a uint8 cache.
    Splits never share images (the split is part of every image's seed). Labels are balanced:
    a split holds ``<split>_per_class`` images of each class.

    Args:
        image_size: tile side in pixels (textures are scaled, so 64 and 224 show the same tissue).
        train_per_class, val_per_class, test_per_class: images per class in each split.
        seed: dataset seed (images, training subset, shuffling).
        num_classes, class_names, in_channels: fixed by the dataset; accepted so that a config can
            state them for interpolation, and checked.
        Other arguments: see :class:`ClassificationDataModule`.
    """

    def __init__(
        self,
        image_size: int = 64,
        train_per_class: int = 200,
        val_per_class: int = 20,
        test_per_class: int = 30,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        train_fraction: float = 1.0,
        augment: Mapping[str, Any] | None = None,
        num_classes: int = len(CLASS_NAMES),
        class_names: list[str] | tuple[str, ...] = CLASS_NAMES,
        in_channels: int = 3,
    ) -> None:
        if list(class_names) != list(CLASS_NAMES) or num_classes != len(CLASS_NAMES) or in_channels != 3:
            raise ValueError(
                f"synthetic_histology always has the {len(CLASS_NAMES)} RGB classes {list(CLASS_NAMES)}; "
                f"got num_classes={num_classes}, class_names={list(class_names)}, in_channels={in_channels}"
            )
        if image_size < 16:  # textures and the nuclei lattice need a few pixels per structure
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        for split, count in counts.items():
            if count < 1:
                raise ValueError(f"{split}_per_class must be at least 1, got {count}")
        super().__init__(
            num_classes=num_classes,
            class_names=class_names,
            in_channels=in_channels,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            train_fraction=train_fraction,
            augment=augment,
        )
        self.per_class = counts

    def _build_split(self, split: str) -> LabelledDataset:
        indices = torch.arange(self.per_class[split] * self.num_classes)
        images = generate_histology(self.seed, split, indices, self.image_size)
        return TensorImageDataset(images, indices % self.num_classes)
