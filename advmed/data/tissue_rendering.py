"""Shared toolkit of the procedural tissue datasets: random numbers, texture primitives, H&E imaging.

Every synthetic tissue dataset renders the same way:

1. :func:`draw_numbers` gives each image its own random numbers (scalars for parameters, jitters
   for a Voronoi lattice, uniform noise maps), from a generator seeded by ``(seed, split, index)``
   alone; a :class:`Draws` hands them out one parameter at a time.
2. Texture primitives (:func:`spots`, :func:`packed_spots`, :func:`voronoi`, :func:`stripes`,
   :func:`smooth_field`, ...) turn them into per-pixel stain densities, vectorised over a batch.
3. :func:`to_rgb` images the densities (Beer-Lambert optical density) through per-image jittered
   stain vectors, with light level, blur and sensor noise.
4. :func:`generate_in_chunks` renders fixed chunks of indices on one thread, so that an image
   never depends on which other indices were asked for.

Densities have four channels: haematoxylin (nuclei, purple-blue), eosin (cytoplasm, stroma,
muscle: pink), a pale blue-grey mucin and a neutral grey (glass, dust, out-of-focus areas).

Written by hand because no maintained library renders procedural H&E-like textures; the FFT
filters and the cellular noise are a few lines of torch each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
"""Split name -> the number mixed into every image's seed, so splits never share an image."""

VORONOI_GRID = 6
"""Voronoi seeds lie on a jittered VORONOI_GRID x VORONOI_GRID lattice (see :func:`voronoi`)."""
VORONOI_POINTS = VORONOI_GRID * VORONOI_GRID

IMAGING_SCALARS, IMAGING_MAPS = 14, 1
"""Random numbers :func:`to_rgb` reads: stain jitter (6), strength (2), white level (4), blur, noise."""

STAINS = torch.tensor(
    [
        [0.650, 0.704, 0.286],
        [0.072, 0.990, 0.105],
        [0.74, 0.58, 0.34],
        [0.577, 0.577, 0.577],
    ]
)
"""Optical-density directions (R, G, B) of the density channels: haematoxylin and eosin after
Ruifrok & Johnston, mucin as the OD of a pale blue-grey, and neutral grey."""


# --------------------------------------------------------------------------------------------
# Deterministic generation.


def generate_in_chunks(
    indices: torch.Tensor,
    chunk_size: int,
    render: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    *outputs: torch.Tensor,
) -> None:
    """Fill ``outputs[k][i]`` with row ``indices[i]`` of ``render``'s k-th result, on one thread.

    ``render(chunk_indices)`` renders a whole chunk ``[c * chunk_size, (c + 1) * chunk_size)``
    and returns one tensor per output (or a single tensor). Each image is thus always computed in
    a batch with the same neighbours: batched float results cannot depend on which other indices
    were asked for. The caller allocates ``outputs`` (it knows their shapes, even for no indices).
    """
    if len(indices) and int(indices.min()) < 0:
        raise ValueError(f"indices must be non-negative, got {int(indices.min())}")
    with single_thread():
        for chunk, wanted, rows in _chunks(indices, chunk_size):
            rendered = render(torch.arange(chunk * chunk_size, (chunk + 1) * chunk_size))
            rendered = (rendered,) if isinstance(rendered, torch.Tensor) else rendered
            for out, part in zip(outputs, rendered, strict=True):
                out[wanted] = part[rows]


def _chunks(indices: torch.Tensor, chunk_size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(chunk, wanted, rows)``: the positions in ``indices`` in that chunk, their rows in it."""
    for chunk in torch.unique(indices // chunk_size).tolist():
        wanted = (indices // chunk_size) == chunk
        yield chunk, wanted, indices[wanted] - chunk * chunk_size


@contextmanager
def single_thread():
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


def draw_numbers(
    seed: int,
    split: str,
    indices: torch.Tensor,
    size: int,
    n_scalars: int,
    n_maps: int,
    n_points: int = VORONOI_POINTS,
) -> Draws:
    """All random numbers of each image, from a generator seeded by (seed, split, index) alone.

    Per image: ``n_scalars`` uniforms for parameters, ``n_points`` (y, x) jitters for Voronoi
    seeds and ``n_maps`` uniform (size, size) noise maps, drawn in that order. A dataset picks the
    counts its renderers need; a renderer asking for more fails with an IndexError.
    """
    n_total = n_scalars + 2 * n_points + n_maps * size * size
    values = torch.empty(len(indices), n_total)
    generator = torch.Generator()
    for row, index in enumerate(indices.tolist()):
        # SeedSequence hashes the triple, so neighbouring indices get unrelated streams.
        generator.manual_seed(
            int(np.random.SeedSequence([seed, SPLIT_IDS[split], index]).generate_state(1, np.uint64)[0])
        )
        torch.rand(n_total, generator=generator, out=values[row])
    scalars, points, maps = values.split([n_scalars, 2 * n_points, n_maps * size * size], dim=1)
    return Draws(scalars, points.reshape(-1, n_points, 2), maps.reshape(-1, n_maps, size, size))


class Draws:
    """Hands out an image batch's random numbers in a fixed order, one parameter at a time.

    Args:
        scalars: (B, n) uniforms, read by :meth:`uniform`.
        seeds: (B, P, 2) uniforms jittering the Voronoi lattice points (see :func:`voronoi`).
        maps: (B, m, S, S) uniform noise maps, read by :meth:`noise`.
    """

    def __init__(self, scalars: torch.Tensor, seeds: torch.Tensor, maps: torch.Tensor) -> None:
        self.scalars, self.seeds, self.maps = scalars, seeds, maps
        self._next_scalar = 0
        self._next_map = 0

    def subset(self, rows: torch.Tensor) -> Draws:
        """The numbers of images ``rows``, handed out from the first of each again."""
        return Draws(self.scalars[rows], self.seeds[rows], self.maps[rows])

    def take(self, n_scalars: int, n_maps: int) -> Draws:
        """Set aside the next ``n_scalars`` scalars and ``n_maps`` maps as their own :class:`Draws`.

        Parts of a rendering that read from separate takes cannot shift each other's numbers,
        whatever each part reads. The Voronoi seeds are shared.
        """
        scalars = self.scalars[:, self._next_scalar : self._next_scalar + n_scalars]
        maps = self.maps[:, self._next_map : self._next_map + n_maps]
        if scalars.shape[1] < n_scalars or maps.shape[1] < n_maps:
            raise IndexError(f"cannot take {n_scalars} scalars and {n_maps} maps: too few numbers left")
        self._next_scalar += n_scalars
        self._next_map += n_maps
        return Draws(scalars, self.seeds, maps)

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


def pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates (S, S) of the pixel centres, in pixels."""
    coords = torch.arange(size, dtype=torch.float32)
    return torch.meshgrid(coords, coords, indexing="ij")


def gaussian_filter(field: torch.Tensor, sigma_along, sigma_across, angle) -> torch.Tensor:
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


def smooth_field(noise: torch.Tensor, sigma, aniso=1.0, angle=0.0) -> torch.Tensor:
    """Gaussian random field with correlation length ``sigma``, normalised to mean 0, std 1."""
    angle = torch.as_tensor(angle, dtype=torch.float32)
    field = gaussian_filter(noise - 0.5, sigma * aniso, sigma, angle)
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    return field / (field.std(dim=(-2, -1), keepdim=True) + 1e-8)


def blobs(impulses: torch.Tensor, sigma_along, sigma_across, angle) -> torch.Tensor:
    """Turn an impulse map into Gaussian blobs of peak height = impulse amplitude."""
    sigma_along, sigma_across = sigma_along.clamp(min=0.7), sigma_across.clamp(min=0.7)
    blurred = gaussian_filter(impulses, sigma_along, sigma_across, angle)
    return blurred * (2 * math.pi * sigma_along * sigma_across)


def spots(noise, count, sigma_along, sigma_across, angle, amp_low=1.0, amp_high=1.0) -> torch.Tensor:
    """Blobs at about ``count`` uniformly random places of the tile (nuclei, specks).

    Impulses fall where the uniform ``noise`` is below count / S^2; the value below the threshold
    doubles as each blob's amplitude, so blob sizes vary within an image.
    """
    p = count / noise.shape[-1] ** 2
    impulses = torch.where(noise < p, amp_low + (amp_high - amp_low) * noise / p, 0.0)
    return blobs(impulses, sigma_along, sigma_across, angle)


def lattice_neighbours(table: torch.Tensor, spacing, jitter: float, size: int):
    """Yield, for every pixel, each of the 9 jittered lattice points of its own and adjacent cells.

    ``table`` (B, >= 2, G*G) holds uniforms per lattice point, the first two moving it by up to
    ``jitter / 2`` spacing in y and x. Point (i, j) sits at ((i - 1 + 0.5 + jitter * (u - 0.5)) * spacing),
    so cells start one spacing before the tile. Yields ``(y, x, point)``: (B, S, S) coordinates
    of the point and (B, S*S) its flat index into ``table``, for callers that read more columns.
    """
    grid = math.isqrt(table.shape[-1])
    # Positions are computed once per lattice point and gathered per pixel, and cell indices once
    # per row and column: far fewer ops than per pixel, with the same float operations per value.
    spacing_per_point = torch.as_tensor(spacing).reshape(-1, 1)
    rows, cols = torch.arange(grid * grid) // grid, torch.arange(grid * grid) % grid
    point_y = (rows - 0.5 + jitter * (table[:, 0] - 0.5)) * spacing_per_point
    point_x = (cols - 0.5 + jitter * (table[:, 1] - 0.5)) * spacing_per_point
    cells = (torch.arange(size, dtype=torch.float32) / torch.as_tensor(spacing).reshape(-1, 1, 1)).long() + 1
    cell_y, cell_x = cells.transpose(-1, -2), cells  # (B, S, 1), (B, 1, S)
    for dy in (-1, 0, 1):
        i = (cell_y + dy).clamp(0, grid - 1)
        for dx in (-1, 0, 1):
            j = (cell_x + dx).clamp(0, grid - 1)
            point = (i * grid + j).view(-1, size * size)
            y = point_y.gather(1, point).view(-1, size, size)
            x = point_x.gather(1, point).view(-1, size, size)
            yield y, x, point


def packed_spots(noise, spacing, fill, sigma_along, sigma_across, angle) -> torch.Tensor:
    """Densely packed but separate blobs (peak 1): cellular noise on a jittered lattice.

    Lattice points ``spacing`` px apart (at least 2.5) move by up to 0.3 spacing and are kept
    with probability ``fill``. Each pixel takes the strongest blob of the 9 nearest lattice
    points (max, not sum, so neighbours never fuse). The lattice size depends on S only, so each
    point always reads the same noise values.
    """
    batch, size = noise.shape[0], noise.shape[-1]
    grid = int(size / 2.5) + 3
    table = noise.flatten(1)[:, : 3 * grid * grid].view(batch, 3, -1)
    kept = table[:, 2] < torch.as_tensor(fill).reshape(-1, 1)
    sigma_along, sigma_across = sigma_along.clamp(min=0.5), sigma_across.clamp(min=0.5)
    cos, sin = torch.cos(angle), torch.sin(angle)
    yy, xx = pixel_grid(size)
    field = torch.zeros(batch, size, size)
    for y, x, point in lattice_neighbours(table, spacing.clamp(min=2.5), 0.6, size):
        off_x, off_y = xx - x, yy - y
        along = off_x * cos + off_y * sin
        across = -off_x * sin + off_y * cos
        blob = torch.exp(-0.5 * ((along / sigma_along) ** 2 + (across / sigma_across) ** 2))
        field = torch.maximum(field, blob * kept.gather(1, point).view_as(y))
    return field


def soft_step(x: torch.Tensor, threshold, width) -> torch.Tensor:
    """Smooth step from 0 to 1 around ``threshold`` (anti-aliased masks)."""
    return torch.sigmoid((x - threshold) / width)


def voronoi(seeds: torch.Tensor, spacing, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to the nearest and second-nearest seed of a jittered lattice (cells: fat, glands).

    ``seeds`` is :attr:`Draws.seeds`, (B, VORONOI_POINTS, 2). ``spacing`` must be at least
    S / (VORONOI_GRID - 2.5) so that the seed lattice covers the tile.
    """
    yy, xx = pixel_grid(size)
    dist = torch.stack(
        [
            torch.hypot(yy - y, xx - x)
            for y, x, _ in lattice_neighbours(seeds.transpose(1, 2), spacing, 0.8, size)
        ],
        1,
    )
    nearest = torch.topk(dist, 2, dim=1, largest=False).values
    return nearest[:, 0], nearest[:, 1]


def stripes(d: Draws, size: int, angle, period, waviness, wave_sigma, sharpness) -> torch.Tensor:
    """Fibres along ``angle``: a sinusoid across them whose phase bends with a smooth random field."""
    yy, xx = pixel_grid(size)
    across = -xx * torch.sin(angle) + yy * torch.cos(angle)
    phase = 2 * math.pi * across / period + waviness * smooth_field(d.noise(), wave_sigma)
    return (0.5 + 0.5 * torch.cos(phase)) ** sharpness


def random_angle(d: Draws) -> torch.Tensor:
    """An orientation per image, uniform in [0, pi)."""
    return d.uniform(0.0, math.pi)


# --------------------------------------------------------------------------------------------
# Imaging.


def to_rgb(od: torch.Tensor, d: Draws) -> torch.Tensor:
    """Stain densities (B, 4, S, S) -> uint8 RGB, with per-image stains, light, blur and noise.

    Reads IMAGING_SCALARS scalars and IMAGING_MAPS maps from ``d``.
    """
    batch = od.shape[0]
    jitter = torch.stack([d.uniform(-0.12, 0.12).flatten() for _ in range(6)], dim=1).view(batch, 2, 3)
    stains = STAINS.expand(batch, 4, 3).clone()
    stains[:, :2] = F.normalize(stains[:, :2] + jitter, dim=-1)  # stain hue varies between slides
    strength = torch.cat([d.uniform(0.5, 1.7), d.uniform(0.5, 1.7), torch.ones(batch, 2, 1)], dim=1)
    density = torch.einsum("bksw,bkc->bcsw", od.clamp(min=0) * strength[..., None], stains)
    white = d.uniform(0.8, 1.0).view(-1, 1, 1, 1) * (
        1 + torch.stack([d.uniform(-0.03, 0.03) for _ in range(3)], 1)
    )
    rgb = white * torch.exp(-density)
    rgb = gaussian_filter(rgb, *(2 * [d.uniform(0.2, 0.9).view(-1, 1, 1)]), torch.zeros(batch, 1, 1))
    rgb = rgb + d.uniform(0.004, 0.02).view(-1, 1, 1, 1) * (d.noise()[:, None] - 0.5) * math.sqrt(12)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
