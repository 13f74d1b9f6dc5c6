"""Procedural PCam-like lymph-node tiles, two classes: the embedded stand-in for PatchCamelyon.

PCam tiles (96 px at 10x) are labelled positive when the central 32 x 32 region holds at least
one pixel of tumour. Here a tile is dense small lymphocytes with stroma and fat regions blended in
by smooth random masks; a positive carries a cluster of tumour cells (large pale pleomorphic
nuclei) that reaches the centre region. Most negatives hold no tumour, but some (hard negatives,
as in PCam) hold a cluster that stays outside the centre region, so the label depends on where
the tumour is, not only on whether there is any.

The tissue textures are the class renderers of :mod:`advmed.data.histology.synthetic_histology`
(lymphocytes, stroma, adipose, tumour), blended in stain-density space and imaged by the shared
toolkit :mod:`advmed.data.tissue_rendering`. Image ``index`` of a split depends only on
``(seed, split, index)``: its label is ``index % 2``, its random numbers come from a generator
seeded by that triple, and rendering runs in fixed chunks of indices.
"""

from __future__ import annotations

import math

import torch

from advmed.data.histology.synthetic_histology import (
    Renderer,
    adipose,
    class_densities,
    lymphocytes,
    stroma,
    tumour,
)
from advmed.data.lymph_node.pcam_layout import CLASS_NAMES  # one definition for every lymph-node dataset
from advmed.data.procedural import ProceduralDataModule
from advmed.data.tissue_rendering import (
    IMAGING_MAPS,
    IMAGING_SCALARS,
    Draws,
    draw_numbers,
    generate_in_chunks,
    pixel_grid,
    smooth_field,
    soft_step,
    to_rgb,
)

HARD_NEGATIVE_FRACTION = 0.25
"""Share of the negatives that hold a tumour cluster outside the centre region."""

_CHUNK = 32  # indices rendered together (even, so every chunk holds both classes)
_FIELD = 180.0  # the tile spans 180 px of a 224-px NCT tile (0.5 um/px), as 96 px of PCam (~1 um/px) do
_MIN_SIZE = 32  # small nuclei and the centre region need a few pixels each

# Random numbers per image, taken in this order as (scalars, maps): each part reads its own, so a
# change in one part cannot shift another's numbers.
_PARTS = {
    "layout": (12, 3),
    "lymphocytes": (8, 2),
    "stroma": (13, 3),
    "fat": (9, 3),
    "tumour": (12, 5),
    "imaging": (IMAGING_SCALARS, IMAGING_MAPS),
}
_BOUNDARY = 0.3  # relative radius wobble of a tumour cluster's outline
_MARGIN = 2.0  # px between a hard negative's cluster and the centre region


def centre_region(size: int) -> slice:
    """Rows (and columns) of the centre region that decides the label: about the central third.

    32 of 96 px as in PCam. The margins are equal, so flips and quarter turns keep the region,
    and with it the label.
    """
    margin = round(size / 3)
    return slice(margin, size - margin)


def generate_lymph_node(
    seed: int, split: str, indices: torch.Tensor, image_size: int, return_tumour_mask: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Render images ``indices`` of ``split`` as uint8 (N, 3, S, S); labels are ``indices % 2``.

    With ``return_tumour_mask`` also returns each image's tumour mask, bool (N, S, S): a label is 1
    exactly when its mask meets :func:`centre_region`.
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    images = torch.empty(len(indices), 3, image_size, image_size, dtype=torch.uint8)
    masks = torch.empty(len(indices), image_size, image_size, dtype=torch.bool)
    generate_in_chunks(indices, _CHUNK, lambda chunk: _render(seed, split, chunk, image_size), images, masks)
    return (images, masks) if return_tumour_mask else images


def _render(seed: int, split: str, indices: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_scalars, n_maps = (sum(counts) for counts in zip(*_PARTS.values()))
    draws = draw_numbers(seed, split, indices, size, n_scalars, n_maps)
    parts = {name: draws.take(*counts) for name, counts in _PARTS.items()}
    layout = parts["layout"]
    k = size / _FIELD * layout.uniform(0.85, 1.15)  # px per NCT px: one magnification per tile
    stroma_mask = _region(layout, size, k, 0.6, 3.0)
    fat_mask = _region(layout, size, k, 1.2, 3.5)
    tumour_mask = _tumour_cluster(layout, size, k, labels=indices % 2)

    od = class_densities(lymphocytes, parts["lymphocytes"], size, k)
    for renderer, part, mask in (
        (stroma, "stroma", stroma_mask),
        (adipose, "fat", fat_mask),
        (tumour, "tumour", tumour_mask),
    ):
        _blend_in(od, renderer, parts[part], size, k, mask)
    return to_rgb(od, parts["imaging"]), tumour_mask > 0.5


def _region(d: Draws, size: int, k, low: float, high: float) -> torch.Tensor:
    """A soft mask (B, S, S) of smooth blobs; the higher its threshold in [low, high), the less area.

    A mask that is nowhere above one half is dropped (zero): a faint wisp of tissue is not worth
    rendering the tissue for.
    """
    mask = soft_step(smooth_field(d.noise(), 25 * k), d.uniform(low, high), 0.15)
    return mask * (mask.amax(dim=(-2, -1), keepdim=True) > 0.5)


def _tumour_cluster(d: Draws, size: int, k, labels: torch.Tensor) -> torch.Tensor:
    """Soft tumour mask (B, S, S): an irregular disc meeting the centre region iff the label is 1.

    A positive's disc is centred inside the centre region. A hard negative's lies near the tile
    border, its radius cut so that even its outline's widest wobble stays ``_MARGIN`` px outside
    the centre region. Other negatives have none.
    """
    centre = centre_region(size)
    low, high = float(centre.start), float(centre.stop - 1)  # pixel centres of the region
    mid = (size - 1) / 2
    # Positives: anywhere in the centre region, from a small focus to most of the tile.
    inside_y, inside_x = d.uniform(low, high), d.uniform(low, high)
    inside_radius = d.uniform(0.15, 0.5) * size
    # Hard negatives: on a square ring around the tile's edge (its corners included).
    direction = d.uniform(0.0, 2 * math.pi)
    cos, sin = torch.cos(direction), torch.sin(direction)
    ring = d.uniform(0.45, 0.6) * size / torch.maximum(cos.abs(), sin.abs())
    outside_y, outside_x = mid + ring * sin, mid + ring * cos
    gap = torch.hypot(_outside(outside_y, low, high), _outside(outside_x, low, high))
    outside_radius = torch.minimum(d.uniform(0.08, 0.25) * size, (gap - _MARGIN) / (1 + _BOUNDARY))

    positive = (labels == 1).view(-1, 1, 1)
    hard_negative = ~positive & (d.uniform(0.0, 1.0) < HARD_NEGATIVE_FRACTION)
    cy = torch.where(positive, inside_y, outside_y)
    cx = torch.where(positive, inside_x, outside_x)
    radius = torch.where(positive, inside_radius, outside_radius)
    # tanh keeps the wobble within +-_BOUNDARY, which the hard negatives' radius relies on.
    radius = radius * (1 + _BOUNDARY * torch.tanh(smooth_field(d.noise(), 12 * k)))
    yy, xx = pixel_grid(size)
    cluster = soft_step(radius - torch.hypot(yy - cy, xx - cx), 0.0, 0.5)
    return cluster * (positive | hard_negative)


def _outside(coordinate: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Distance of ``coordinate`` from the interval [low, high] (0 inside it)."""
    return (low - coordinate).clamp(min=0) + (coordinate - high).clamp(min=0)


def _blend_in(od: torch.Tensor, renderer: Renderer, d: Draws, size: int, k, mask: torch.Tensor) -> None:
    """Replace ``od`` (B, 4, S, S) by ``renderer``'s tissue where ``mask`` is set, in place.

    Only images the mask touches are rendered: many tiles hold no stroma, fat or tumour.
    """
    rows = torch.nonzero(mask.flatten(1).amax(1) > 0).flatten()
    if len(rows):
        weight = mask[rows, None]
        tissue = class_densities(renderer, d.subset(rows), size, k[rows])
        od[rows] = od[rows] * (1 - weight) + tissue * weight


class SyntheticLymphNodeDataModule(ProceduralDataModule):
    """Procedural PCam-like lymph-node tiles: metastasis (1) iff tumour reaches the centre region.

    Each split is rendered once, at the first ``setup`` that needs it, into a uint8 cache.
    Splits never share images (the split is part of every image's seed). Labels are balanced:
    a split holds ``<split>_per_class`` images of each class.

    Arguments: see :class:`ProceduralDataModule`; by default 96 px tiles, 500 / 50 / 100 images per class
    in train / val / test.
    """

    modality = "histology"
    stain = "he"

    CLASS_NAMES = CLASS_NAMES
    NAME = "synthetic_lymph_node"
    MIN_SIZE = _MIN_SIZE
    DEFAULTS = {"image_size": 96, "train_per_class": 500, "val_per_class": 50, "test_per_class": 100}

    def render(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        return generate_lymph_node(self.seed, split, indices, self.image_size)
