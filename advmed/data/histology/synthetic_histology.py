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

The primitives, the random numbers and the imaging are the shared toolkit
:mod:`advmed.data.tissue_rendering`; the class renderers here are public so that other synthetic
tissue sets (:mod:`advmed.data.lymph_node.synthetic_lymph_node`) compose them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from advmed.data.procedural import ProceduralDataModule
from advmed.data.tissue_rendering import (
    IMAGING_MAPS,
    IMAGING_SCALARS,
    Draws,
    draw_numbers,
    generate_in_chunks,
    packed_spots,
    random_angle,
    smooth_field,
    soft_step,
    spots,
    stripes,
    to_rgb,
    voronoi,
)

CLASS_NAMES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
_CHUNK = 9 * 16  # indices rendered together; a multiple of 9 so every chunk holds every class
_N_SCALARS, _N_MAPS = 40, 6  # random numbers per image, the last IMAGING_* of them for to_rgb

Renderer = Callable[[Draws, int, Any], tuple[Any, Any, Any, Any]]
"""A class texture: (draws, size, scale) -> H, E, mucin and grey densities, each broadcastable to
(B, S, S). ``scale`` (B, 1, 1) is px per px of a 224-px NCT tile: sizes inside are in those px."""


def generate_histology(seed: int, split: str, indices: torch.Tensor, image_size: int) -> torch.Tensor:
    """Render images ``indices`` of ``split`` as uint8 (N, 3, S, S); labels are ``indices % 9``."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    images = torch.empty(len(indices), 3, image_size, image_size, dtype=torch.uint8)
    generate_in_chunks(indices, _CHUNK, lambda chunk: _render(seed, split, chunk, image_size), images)
    return images


def _render(seed: int, split: str, indices: torch.Tensor, size: int) -> torch.Tensor:
    draws = draw_numbers(seed, split, indices, size, _N_SCALARS, _N_MAPS)
    # Class textures and the shared imaging step draw from disjoint parts of each image's numbers.
    texture = draws.take(_N_SCALARS - IMAGING_SCALARS, _N_MAPS - IMAGING_MAPS)
    imaging = draws.take(IMAGING_SCALARS, IMAGING_MAPS)
    labels = indices % len(CLASS_NAMES)
    od = torch.empty(len(indices), 4, size, size)
    for label, renderer in enumerate(RENDERERS):
        members = torch.nonzero(labels == label).flatten()
        if len(members):
            od[members] = class_densities(renderer, texture.subset(members), size)
    return to_rgb(od, imaging)


def class_densities(renderer: Renderer, d: Draws, size: int, scale=None) -> torch.Tensor:
    """Stain densities (B, 4, S, S) of one class renderer for the images of ``d``.

    ``scale`` is px per px of a 224-px NCT tile; by default the tile's field of view with a
    random zoom drawn from ``d`` (the renderer then reads the numbers after it).
    """
    if scale is None:
        scale = size / 224.0 * d.uniform(0.8, 1.25)  # sizes in the renderers are in px of a 224-px tile
    batch = d.scalars.shape[0]
    return torch.stack([t.expand(batch, size, size) for t in renderer(d, size, scale)], 1)


# --------------------------------------------------------------------------------------------
# Class renderers (see Renderer); public so that other synthetic tissue sets compose them.


def adipose(d: Draws, size: int, k):
    """ADI: empty fat cells (Voronoi), thin torn membranes with a few flat nuclei."""
    spacing = d.uniform(80, 150) * k
    d1, d2 = voronoi(d.seeds, spacing, size)
    width = (d.uniform(1.5, 3.0) * k).clamp(min=0.9)
    membrane = torch.exp(-(((d2 - d1) / width) ** 2))
    membrane = membrane * soft_step(
        smooth_field(d.noise(), 6 * k), d.uniform(-1.6, -0.6), 0.3
    )  # torn membranes
    flat_nuclei = spots(d.noise(), d.uniform(2, 12), 7 * k, 2 * k, random_angle(d)) * membrane
    h = soft_step(flat_nuclei, 0.3, 0.1) * d.uniform(0.7, 1.3) + membrane * 0.05
    e = membrane * d.uniform(0.35, 0.9) + d.uniform(0.0, 0.08)
    return h, e, torch.zeros_like(h), d.uniform(0.0, 0.12) + 0.03 * smooth_field(d.noise(), 20 * k)


def background(d: Draws, size: int, k):
    """BACK: glass, dust and out-of-focus grey with a faint stain tint."""
    grey = d.uniform(0.02, 0.5) * (1 + d.uniform(0.0, 0.4) * smooth_field(d.noise(), 40 * k))
    specks = spots(
        d.noise(), d.uniform(0, 25), d.uniform(1.5, 5) * k, d.uniform(1.5, 4) * k, random_angle(d), 0.3, 1.0
    )
    grey = grey + specks * d.uniform(0.2, 0.8)
    tint = d.uniform(0.0, 0.12)
    return tint * 0.5, tint, torch.zeros_like(grey), grey


def debris(d: Draws, size: int, k):
    """DEB: necrosis -- eosin patches, fragmented and pyknotic nuclei, some mucin."""
    patches = soft_step(smooth_field(d.noise(), d.uniform(6, 14) * k), d.uniform(-0.5, 0.6), 0.35)
    fragments = spots(
        d.noise(),
        d.uniform(120, 380),
        d.uniform(1.5, 3.5) * k,
        d.uniform(1.2, 2.5) * k,
        random_angle(d),
        0.3,
        1.4,
    )
    broken = soft_step(smooth_field(d.noise(), 1.2 * k), -0.2, 0.3)  # karyorrhexis: nuclei fall apart
    pyknotic = spots(d.noise(), d.uniform(3, 20), 4 * k, 3.5 * k, random_angle(d), 0.6, 1.3)
    h = soft_step(fragments * broken + pyknotic, 0.45, 0.12) * d.uniform(0.8, 1.6) + 0.1 * patches
    e = patches * d.uniform(0.25, 0.8) + d.uniform(0.02, 0.15)
    return h, e, d.uniform(0.0, 0.2) * (1 - patches), torch.zeros_like(h)


def lymphocytes(d: Draws, size: int, k):
    """LYM: densely packed small round dark nuclei over little cytoplasm."""
    spacing = d.uniform(10, 13.5) * k
    nuclei = packed_spots(
        d.noise(),
        spacing,
        d.uniform(0.65, 0.95),
        d.uniform(3.8, 4.5) * k,
        d.uniform(3.6, 4.2) * k,
        random_angle(d),
    )
    mask = soft_step(nuclei, 0.6, 0.08)
    chromatin = 1 + 0.15 * smooth_field(d.noise(), 1.0 * k)
    h = mask * chromatin * d.uniform(1.2, 2.2) + d.uniform(0.03, 0.15)
    e = d.uniform(0.08, 0.35) * (1 - 0.5 * mask)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


def mucus(d: Draws, size: int, k):
    """MUC: streaky pale blue-grey mucin pools with a few floating cells."""
    angle = random_angle(d)
    streaks = smooth_field(d.noise(), d.uniform(3, 8) * k, d.uniform(2, 6), angle)
    pools = soft_step(smooth_field(d.noise(), 25 * k), d.uniform(-1.0, 0.6), 0.4)
    mucin = d.uniform(0.15, 0.6) * (0.55 + 0.25 * streaks) * (0.4 + 0.6 * pools)
    cells = spots(d.noise(), d.uniform(0, 10), 4.5 * k, 4 * k, angle, 0.7, 1.2)
    h = soft_step(cells, 0.5, 0.1) * d.uniform(0.8, 1.4) + mucin * d.uniform(0.05, 0.3)
    e = d.uniform(0.0, 0.15) * soft_step(streaks, 0.8, 0.3)
    return h, e, mucin.clamp(min=0), torch.zeros_like(h)


def muscle(d: Draws, size: int, k):
    """MUS: parallel eosin fibres with long cigar-shaped nuclei along them."""
    angle = random_angle(d)
    fibres = stripes(
        d, size, angle, (d.uniform(8, 14) * k).clamp(min=2.6), d.uniform(0.3, 1.2), 30 * k, d.uniform(1, 3)
    )
    nuclei = spots(
        d.noise(), d.uniform(8, 25), d.uniform(11, 16) * k, d.uniform(2.2, 3.0) * k, angle, 0.9, 1.3
    )
    h = soft_step(nuclei, 0.5, 0.1) * d.uniform(0.9, 1.6) + d.uniform(0.0, 0.06)
    e = d.uniform(0.45, 1.0) * (0.5 + 0.5 * fibres)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


def normal_mucosa(d: Draws, size: int, k):
    """NORM: round crypts -- basal nuclei, goblet cells, lumen -- in loose stroma."""
    spacing = d.uniform(110, 180) * k
    d1, _ = voronoi(d.seeds, spacing, size)
    r = d1 + 0.08 * spacing * smooth_field(d.noise(), 12 * k)  # roundish, not perfect circles
    outer = d.uniform(0.34, 0.44) * spacing
    lumen = d.uniform(0.3, 0.55) * outer
    w = (1.0 * k).clamp(min=0.5)
    gland = soft_step(outer - r, 0, w)
    epithelium = gland * soft_step(r - lumen, 0, w)
    basal = epithelium * soft_step(r - (outer - 0.35 * (outer - lumen)), 0, w)
    epithelial_nuclei = (
        spots(d.noise(), d.uniform(200, 400), 5 * k, 3.2 * k, random_angle(d), 0.9, 1.2) * basal
    )
    goblets = soft_step(spots(d.noise(), d.uniform(40, 90), 5 * k, 4.5 * k, random_angle(d)), 0.5, 0.1) * (
        epithelium - basal
    ).clamp(min=0)
    stromal_nuclei = spots(d.noise(), d.uniform(15, 50), 4.5 * k, 4 * k, random_angle(d), 0.8, 1.2) * (
        1 - gland
    )
    h = soft_step(epithelial_nuclei + stromal_nuclei, 0.5, 0.1) * d.uniform(1.0, 1.7) + 0.1 * epithelium
    e = (d.uniform(0.15, 0.5) * (1 - gland) + d.uniform(0.2, 0.45) * epithelium) * (1 - 0.8 * goblets)
    return h, e, goblets * 0.3 + 0.05 * (gland - epithelium).clamp(min=0), torch.zeros_like(h)


def stroma(d: Draws, size: int, k):
    """STR: wavy collagen fibres, loose in places, with sparse spindle nuclei."""
    angle = random_angle(d)
    fibres = stripes(
        d,
        size,
        angle,
        (d.uniform(10, 20) * k).clamp(min=3.0),
        d.uniform(2.5, 6.0),
        d.uniform(18, 35) * k,
        d.uniform(2, 5),
    )
    loose = soft_step(smooth_field(d.noise(), 7 * k, 3.0, angle), d.uniform(-0.8, 0.3), 0.4)
    nuclei = spots(
        d.noise(), d.uniform(4, 16), d.uniform(8, 12) * k, d.uniform(1.8, 2.6) * k, angle, 0.9, 1.3
    )
    h = soft_step(nuclei, 0.5, 0.1) * d.uniform(0.9, 1.6) + d.uniform(0.0, 0.06)
    e = d.uniform(0.3, 0.9) * fibres * loose + d.uniform(0.05, 0.3)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


def tumour(d: Draws, size: int, k):
    """TUM: crowded large pleomorphic pale nuclei, irregular glands and necrotic holes."""
    nuclei = sum(
        spots(
            d.noise(),
            d.uniform(25, 55),
            d.uniform(7, 11) * k,
            d.uniform(4.5, 7) * k,
            random_angle(d),
            0.6,
            1.6,
        )
        for _ in range(2)
    )
    nuclei = nuclei + 0.3 * smooth_field(d.noise(), 2.5 * k)  # irregular, pleomorphic outlines
    mask = soft_step(nuclei, 0.5, 0.1)
    lumen = soft_step(
        smooth_field(d.noise(), 14 * k), d.uniform(0.8, 2.2), 0.25
    )  # irregular glands, necrosis
    chromatin = 1 + 0.25 * smooth_field(d.noise(), 1.0 * k)
    h = (mask * chromatin * d.uniform(0.9, 1.6) + d.uniform(0.1, 0.3)) * (1 - 0.85 * lumen)
    e = d.uniform(0.2, 0.5) * (1 - 0.85 * lumen)
    return h, e, torch.zeros_like(h), torch.zeros_like(h)


RENDERERS: tuple[Renderer, ...] = (
    adipose,
    background,
    debris,
    lymphocytes,
    mucus,
    muscle,
    normal_mucosa,
    stroma,
    tumour,
)
"""The class renderers in the order of CLASS_NAMES."""


class SyntheticHistologyDataModule(ProceduralDataModule):
    """Procedural 9-class H&E-like tiles (classes and order of NCT-CRC-HE-100K); no files needed.

    Each split is rendered once, at the first ``setup`` that needs it, into a uint8 cache.
    Splits never share images (the split is part of every image's seed). Labels are balanced:
    a split holds ``<split>_per_class`` images of each class.

    Arguments: see :class:`ProceduralDataModule`; by default 64 px tiles, 200 / 20 / 30 images per class
    in train / val / test.
    """

    modality = "histology"
    stain = "he"

    CLASS_NAMES = CLASS_NAMES
    NAME = "synthetic_histology"
    MIN_SIZE = 16
    DEFAULTS = {"image_size": 64, "train_per_class": 200, "val_per_class": 20, "test_per_class": 30}

    def render(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        return generate_histology(self.seed, split, indices, self.image_size)
