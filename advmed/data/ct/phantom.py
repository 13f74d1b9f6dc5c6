"""Procedural axial abdominal CT phantom slices in HU, with liver, spleen, kidney and pancreas label maps.

This module renders slices (:func:`generate_ct_slices`); :mod:`advmed.data.ct.synthetic_ct` windows,
caches and splits them as a data module, :mod:`advmed.data.ct.phantom_geometry` holds the shapes.

A slice is an axial cut through the upper abdomen at a level ``z`` (0: liver dome, 1: lower poles
of the kidneys), in radiological convention (image left = patient right, anterior up). It holds the
body outline (subcutaneous fat, abdominal-wall muscle, visceral fat with bowel loops and gas
pockets), the liver (left lobe at the upper levels, gallbladder at its lower edge), the spleen,
both kidneys (bright cortex, darker medulla, renal sinus fat at the hilum), the pancreas (head to
tail along a curve in front of the aorta, splenic vein behind it), the stomach (fluid with an
air-fluid level), the aorta and the inferior vena cava, the spine (vertebral body, canal, posterior
arch), paraspinal and psoas muscles and ribs. Labels: background 0, liver 1, spleen 2, kidneys 3
(both), pancreas 4; everything else is background.

Intensities are Hounsfield units (:data:`HU`), textbook values of abdominal CT (e.g. Radiopaedia,
"Hounsfield unit"): air -1000, fat -100, muscle 50; liver 60, spleen 50 and pancreas 40 as on
unenhanced scans, so that liver and spleen differ by ~10 HU and the pancreas matches the bowel
wall's 35 (shape and place must tell them apart); renal cortex 150 over medulla 80 and aorta 150 as
in the corticomedullary contrast phase, in which the kidneys stand out; cancellous bone 250, ribs
500, cortical bone 900. Every patient jitters them a little (contrast timing, scanner). Images get
partial-volume blur and spatially correlated noise of 10-20 HU (per patient); the data module
windows them (abdomen 40 / 400 by default) into [0, 1].

Slices come in phantom patients ("volumes") of ``slices_per_volume`` consecutive indices, which
share the patient's size, pose, fat, organ sizes and z extents and contrast, and step evenly
through a z range of the patient's. Organs have their own z extents, so that some slices lack the
spleen, the kidneys, the pancreas or the liver (the Dice rule for absent organs is exercised).
Anatomy lives in body coordinates: a slice at 64 px shows the same organs as at 128 px (the bowel
pattern and the noise are drawn per pixel and differ).

Written by hand because no maintained library renders abdominal CT phantoms with label maps: XCAT
is licensed and not openly distributed, analytic phantoms (Shepp-Logan, FORBILD) are ellipse sets
for reconstruction tests without organ labels, MONAI's synthetic images are random blobs. The
geometry is a few ellipses and tubes in torch (:mod:`advmed.data.ct.phantom_geometry`), vectorised
over a chunk of slices and computed only in a box of pixels around each organ; the random numbers,
the correlated fields and the deterministic chunked rendering are the shared toolkit
:mod:`advmed.data.tissue_rendering`.

Determinism: slice ``index`` of a split depends only on ``(seed, split, index)`` (and on
``slices_per_volume``, which says which patient it belongs to): its own random numbers come from a
generator seeded by that triple, its patient's from one seeded by ``(seed, split, PATIENT_STREAM +
patient)``, and rendering runs in fixed chunks of indices, so a slice is the same whether it is
asked for alone or with others, and whatever the split sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch

from advmed.data.ct.phantom_geometry import WHOLE_IMAGE, Patch, ellipsoid_profile, outline_wobble
from advmed.data.segmentation_datasets import BACKGROUND
from advmed.data.tissue_rendering import (
    Draws,
    draw_numbers,
    gaussian_filter,
    generate_in_chunks,
    pixel_grid,
    smooth_field,
    soft_step,
)

CLASS_NAMES = (BACKGROUND, "liver", "spleen", "kidneys", "pancreas")
LIVER, SPLEEN, KIDNEYS, PANCREAS = 1, 2, 3, 4

HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 50.0,
    "bowel": 35.0,  # bowel wall and collapsed loops
    "fluid": 10.0,  # gallbladder bile, stomach content, spinal canal
    "liver": 60.0,
    "spleen": 50.0,
    "kidney_cortex": 150.0,
    "kidney_medulla": 80.0,
    "renal_sinus": -60.0,  # fat with vessels at the kidney's hilum
    "pancreas": 40.0,
    "aorta": 150.0,
    "ivc": 110.0,
    "cancellous_bone": 250.0,
    "cortical_bone": 900.0,
    "rib": 500.0,
}
"""Nominal Hounsfield units of the phantom's tissues (each patient jitters them a little)."""

_HU_SPREAD = {
    "fat": 10, "muscle": 6, "liver": 6, "spleen": 5, "pancreas": 5, "kidney_cortex": 20, "kidney_medulla": 15,
    "aorta": 30, "ivc": 20, "cancellous_bone": 50, "cortical_bone": 150,
}
"""Per-patient HU jitter (uniform +-spread): contrast timing and scanner calibration."""

PATIENT_STREAM = 2**40
"""Patient ``p`` draws its numbers as index ``PATIENT_STREAM + p``, which no slice reaches."""

MIN_SIZE = 32  # the pancreas and the kidneys' cortex need a few pixels each
_CHUNK = 8  # slices rendered together (small tensors stay in cache: faster than larger chunks)

# Random numbers: per patient (scalars only) and per slice (scalars, maps).
_PATIENT_SCALARS = 80
_SLICE_SCALARS, _SLICE_MAPS = 40, 2


def generate_ct_slices(
    seed: int, split: str, indices: torch.Tensor, image_size: int, slices_per_volume: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render slices ``indices`` of ``split``: HU float32 (N, 1, S, S), labels uint8 (N, S, S) and
    the slices' z levels float32 (N,) (0 liver dome, 1 lower kidney poles; outside [0, 1] too).

    Slice ``i`` belongs to patient ``i // slices_per_volume``.
    """
    if slices_per_volume < 1:
        raise ValueError(f"slices_per_volume must be at least 1, got {slices_per_volume}")
    indices = torch.as_tensor(indices, dtype=torch.long)
    hu = torch.empty(len(indices), 1, image_size, image_size)
    labels = torch.empty(len(indices), image_size, image_size, dtype=torch.uint8)
    z = torch.empty(len(indices))
    render = partial(_render, seed, split, size=image_size, slices_per_volume=slices_per_volume)
    generate_in_chunks(indices, _CHUNK, render, hu, labels, z)
    return hu, labels, z


def _render(
    seed: int, split: str, indices: torch.Tensor, size: int, slices_per_volume: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of :func:`generate_ct_slices`: its patients' and slices' random numbers, then the phantom."""
    patients = indices // slices_per_volume
    unique, rows = torch.unique(patients, return_inverse=True)
    patient = draw_numbers(seed, split, PATIENT_STREAM + unique, 1, _PATIENT_SCALARS, 1, n_points=1)
    local = draw_numbers(seed, split, indices, size, _SLICE_SCALARS, _SLICE_MAPS, n_points=1)
    phantom = _Phantom(patient.subset(rows), local, indices % slices_per_volume, slices_per_volume, size)
    return phantom.render()


class _Phantom:
    """One chunk of slices: draws their patients' and their own parameters, then paints the tissues
    back to front (a later tissue replaces an earlier one, and its label with it)."""

    def __init__(
        self, patient: Draws, local: Draws, position: torch.Tensor, per_volume: int, size: int
    ) -> None:
        p, self.local, self.size = patient, local, size
        # Pose and habitus.
        self.scale = p.uniform(0.86, 1.08)  # body width in the field of view
        ratio = p.uniform(0.8, 1.0)  # antero-posterior / lateral
        angle = p.uniform(-0.08, 0.08)
        self.cx, self.cy = p.uniform(-0.04, 0.04), p.uniform(-0.06, 0.03)
        self.fat = p.uniform(0.03, 0.13)  # subcutaneous fat thickness
        self.wall = p.uniform(0.022, 0.04)  # abdominal-wall muscle thickness
        self.body_wobble = outline_wobble(p, 0.03, square=-0.04)
        # Slice levels: the patient's slices step evenly through [z0, z0 + span].
        z0, span = p.uniform(-0.2, 0.3), p.uniform(0.55, 0.85)
        step = position.view(-1, 1, 1).float() / max(per_volume - 1, 1)
        self.z = z0 + span * (local.uniform(0.0, 1.0) if per_volume == 1 else step)
        # Organ sizes, outlines and z extents.
        self.liver_end, self.left_lobe_end = p.uniform(0.58, 0.85), p.uniform(0.22, 0.42)
        self.liver_scale, self.liver_wobble = p.uniform(0.88, 1.12), outline_wobble(p, 0.05)
        has_gallbladder = p.uniform(0, 1) < 0.75  # the others had it removed
        gallbladder_extent = (p.uniform(0.3, 0.4), p.uniform(0.55, 0.7))
        self.gallbladder = has_gallbladder * ellipsoid_profile(self.z, *gallbladder_extent)
        self.spleen_extent = (p.uniform(-0.12, 0.08), p.uniform(0.38, 0.58))
        self.spleen_scale, self.spleen_wobble = p.uniform(0.8, 1.2), outline_wobble(p, 0.06)
        self.kidney_extent = {
            -1: (p.uniform(0.34, 0.46), p.uniform(0.86, 1.02)),  # patient's right: lower, under the liver
            1: (p.uniform(0.26, 0.38), p.uniform(0.8, 0.96)),
        }
        self.kidney_scale = p.uniform(0.85, 1.15)
        self.pancreas_start, self.pancreas_length = p.uniform(0.18, 0.3), p.uniform(0.28, 0.38)
        self.pancreas_scale = p.uniform(0.8, 1.2)
        self.stomach_end, self.stomach_scale = p.uniform(0.3, 0.55), p.uniform(0.75, 1.2)
        self.bowel = p.uniform(0.25, 0.55)  # share of the visceral fat that bowel loops fill
        self.gas = p.uniform(1.5, 2.4)  # the higher, the less gas in the loops
        # Contrast timing and scanner calibration: per-patient HU offsets; noise level.
        self.hu = {name: torch.full_like(self.scale, value) for name, value in HU.items()}
        for name, spread in _HU_SPREAD.items():
            self.hu[name] = self.hu[name] + p.uniform(-spread, spread)
        self.noise_std = p.uniform(10.0, 20.0)

        # Canonical coordinates of every pixel.
        rows, cols = pixel_grid(size)
        half = size / 2
        du, dv = (cols - (size - 1) / 2) / half - self.cx, (rows - (size - 1) / 2) / half - self.cy
        self.cos, self.sin = torch.cos(angle), torch.sin(angle)
        self.sy = self.scale * ratio
        self.x = (self.cos * du + self.sin * dv) / self.scale
        self.y = (self.cos * dv - self.sin * du) / self.sy
        self.px = self.sy * half  # px per canonical unit, along the shorter axis
        self.image = torch.full((len(position), size, size), HU["air"])
        self.labels = torch.zeros(len(position), size, size, dtype=torch.uint8)

    def patch(self, x0: float, x1: float, y0: float, y1: float) -> Patch:
        """The pixels that the canonical rectangle [x0, x1] x [y0, y1] covers in any slice, 3 px more."""
        xs, ys = torch.tensor([x0, x1, x0, x1]), torch.tensor([y0, y0, y1, y1])
        u = self.cx + self.cos * xs * self.scale - self.sin * ys * self.sy
        v = self.cy + self.sin * xs * self.scale + self.cos * ys * self.sy
        half, centre = self.size / 2, (self.size - 1) / 2
        cols, rows = u * half + centre, v * half + centre
        box = tuple(
            slice(max(0, math.floor(float(c.min())) - 3), min(self.size, math.ceil(float(c.max())) + 4))
            for c in (rows, cols)
        )
        return Patch(self.x, self.y, box)

    def crop(self, field: torch.Tensor, where: Patch) -> torch.Tensor:
        return field[:, where.box[0], where.box[1]]

    def paint(self, where: Patch, level: torch.Tensor, value, label: int | None = None) -> None:
        """Paint ``value`` (HU, per slice or a full map) where ``level`` > 0, anti-aliased; set the
        label there unless ``label`` is None (nothing labelled lies underneath)."""
        rows, cols = where.box
        if isinstance(value, torch.Tensor) and value.shape[-1] > 1:
            value = value[:, rows, cols]
        target = self.image[:, rows, cols]
        target.add_(soft_step(level * self.px, 0.0, 0.3) * (value - target))
        if label is not None:
            self.labels[:, rows, cols].masked_fill_(level > 0, label)

    # -- anatomy, back to front ----------------------------------------------------------------

    def render(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d, hu, z = self.local, self.hu, self.z
        jitter = [d.uniform(-0.015, 0.015) for _ in range(12)]  # small per-slice organ shifts
        whole = Patch(self.x, self.y, WHOLE_IMAGE)
        body = whole.ellipse(0.0, 0.0, 0.84, 0.62, ay_back=0.57, wobble=self.body_wobble)
        self.paint(whole, body, hu["fat"])
        muscle = body - self.fat
        self.paint(whole, muscle, hu["muscle"])
        cavity = muscle - self.wall
        self.paint(whole, cavity, hu["fat"] + 10)

        self.bowel_loops(whole, cavity)
        self.stomach(cavity, jitter[0])
        self.liver(cavity, jitter[4], jitter[5])
        self.spleen(cavity, jitter[6], jitter[7])

        # Retroperitoneal fat around the great vessels (the liver wraps around it), kidneys, pancreas.
        retro = self.patch(-0.24, 0.2, -0.02, 0.42)
        self.paint(retro, retro.circle(-0.02, 0.2, 0.17), hu["fat"], 0)
        self.kidneys(jitter[1:4])
        self.pancreas(jitter[8], jitter[9])

        # Paraspinal muscles: no organ reaches behind the spine.
        back = self.patch(-0.32, 0.32, 0.25, 0.56)
        level = torch.maximum(
            back.ellipse(-0.14, 0.41, 0.12, 0.1, angle=0.3), back.ellipse(0.14, 0.41, 0.12, 0.1, angle=-0.3)
        )
        self.paint(back, torch.minimum(level, self.crop(muscle, back)), hu["muscle"], 0)
        vessels = self.patch(-0.2, 0.14, -0.04, 0.18)
        self.paint(vessels, vessels.circle(0.04, 0.08, 0.045), hu["aorta"], 0)
        self.paint(vessels, vessels.ellipse(-0.1, 0.06, 0.05, 0.035), hu["ivc"], 0)
        self.spine()
        self.ribs(whole, body, cavity)

        # Imaging: partial-volume blur, then correlated noise.
        blur = 0.6 * self.size / 128
        image = gaussian_filter(self.image, blur, blur, torch.zeros(()))
        image = image + self.noise_std * smooth_field(d.noise(), 0.7 * self.size / 128)
        return image[:, None], self.labels, z.flatten()

    def bowel_loops(self, whole: Patch, cavity: torch.Tensor) -> None:
        """Bowel loops in front of the retroperitoneum: blobs of a random field (wall, fluid lumen,
        gas pockets), filling more of the visceral fat at the lower levels."""
        d, hu = self.local, self.hu
        sigma = 0.05 * self.size
        field = smooth_field(d.noise(), sigma)  # about 10 field units per canonical unit across blobs
        front = torch.minimum(cavity - 0.03, 0.1 - whole.y)
        share = (self.bowel * (0.6 + 0.8 * self.z.clamp(0, 1))).clamp(max=0.7)
        loops = torch.minimum(front, (field - 1.2 + 2.4 * share) / 10)
        self.paint(whole, loops, hu["bowel"])
        lumen = loops - 0.012
        self.paint(whole, lumen, hu["fluid"] + 10)
        gas = torch.minimum(lumen, (field - self.gas) / 10)  # in the widest loops
        self.paint(whole, gas, hu["air"] + 50)

    def stomach(self, cavity: torch.Tensor, jitter: torch.Tensor) -> None:
        """The stomach at the upper levels (patient's left, anterior): wall, fluid, gas on top."""
        hu = self.hu
        size = self.stomach_scale * ellipsoid_profile(self.z, -0.6, self.stomach_end)
        where = self.patch(-0.05, 0.7, -0.55, 0.1)
        cavity = self.crop(cavity, where)
        stomach = where.ellipse(0.3 + jitter, -0.22, 0.2 * size, 0.15 * size, angle=0.5)
        stomach = torch.minimum(stomach, cavity)
        self.paint(where, stomach, hu["bowel"])
        self.paint(where, stomach - 0.02, hu["fluid"])
        air_fluid_level = -0.22 - 0.05 * size - where.y
        self.paint(where, torch.minimum(stomach - 0.02, air_fluid_level), hu["air"] + 50)

    def liver(self, cavity: torch.Tensor, jitter_x: torch.Tensor, jitter_y: torch.Tensor) -> None:
        """Right lobe filling the patient's right upper abdomen, shrinking to its posterolateral tip
        at the lower levels; left lobe across the midline at the upper levels; gallbladder."""
        hu, z = self.hu, self.z
        top = -0.45
        shrink = ((z - 0.15) / (self.liver_end - 0.15)).clamp(0, 1)
        right = self.liver_scale * ellipsoid_profile(z, top, self.liver_end + 0.15) * (1 - shrink**2).sqrt()
        where = self.patch(-0.95, 0.3, -0.72, 0.62)
        lobe = where.ellipse(
            -0.38 - 0.14 * shrink + jitter_x, -0.02 - 0.04 * shrink, 0.42 * right, 0.5 * right,
            angle=-0.3, wobble=self.liver_wobble,
        )
        self.paint(where, torch.minimum(lobe, self.crop(cavity, where) - 0.005), hu["liver"], LIVER)
        left_size = self.liver_scale * ellipsoid_profile(z, top, self.left_lobe_end)
        where = self.patch(-0.48, 0.48, -0.58, -0.04)
        left = where.ellipse(0.0, -0.3 + jitter_y, 0.36 * left_size, 0.14 * left_size, angle=-0.2)
        self.paint(where, torch.minimum(left, self.crop(cavity, where) - 0.005), hu["liver"], LIVER)
        gb = self.gallbladder
        gallbladder = self.patch(-0.35, 0.02, -0.42, 0.02)
        level = gallbladder.ellipse(-0.17, -0.2, 0.055 * gb, 0.085 * gb, angle=0.4)
        self.paint(gallbladder, level, hu["fluid"], 0)

    def spleen(self, cavity: torch.Tensor, jitter_x: torch.Tensor, jitter_y: torch.Tensor) -> None:
        """A crescent along the posterolateral wall of the patient's left, hilum facing medially."""
        size = self.spleen_scale * ellipsoid_profile(self.z, *self.spleen_extent)
        where = self.patch(0.1, 0.95, -0.35, 0.68)
        spleen = where.ellipse(
            0.52 + jitter_x, 0.17 + jitter_y, 0.15 * size, 0.32 * size, angle=-0.6, wobble=self.spleen_wobble
        )
        spleen = torch.minimum(spleen, -where.circle(0.27, 0.05, 0.1 * size))  # concave hilum
        self.paint(where, torch.minimum(spleen, self.crop(cavity, where) - 0.005), self.hu["spleen"], SPLEEN)

    def kidneys(self, jitter: Sequence[torch.Tensor]) -> None:
        """Both kidneys either side of the spine, hilum anteromedial: bright cortex, darker medulla,
        sinus fat at the hilum (middle levels only), in perirenal fat; psoas medial to them."""
        hu, z = self.hu, self.z
        parts = []
        for side in (-1, 1):
            start, end = self.kidney_extent[side]
            size = self.kidney_scale * ellipsoid_profile(z, start, end)
            where = self.patch(0.3 * side - 0.26, 0.3 * side + 0.26, -0.08, 0.48)
            centre = (0.3 * side + jitter[1 + side], 0.2 + jitter[1])
            tilt = 0.6 * side  # long axis from anterolateral to posteromedial
            outline = where.ellipse(*centre, 0.1 * size, 0.145 * size, angle=tilt)
            self.paint(where, outline + 0.03, hu["fat"], 0)  # perirenal fat
            middle = (start + 0.3 * (end - start), end - 0.3 * (end - start))  # the hilum is mid-kidney
            hilum_size = ellipsoid_profile(z, *middle)
            parts.append((where, centre, size, tilt, outline, hilum_size))
        psoas_size = (z - 0.35).clamp(0, 0.5) * 2
        psoas = self.patch(-0.26, 0.26, 0.08, 0.32)
        level = torch.maximum(
            psoas.ellipse(-0.15, 0.2, 0.06 * psoas_size, 0.07 * psoas_size),
            psoas.ellipse(0.15, 0.2, 0.06 * psoas_size, 0.07 * psoas_size),
        )
        self.paint(psoas, level, hu["muscle"], 0)
        for side, (where, centre, size, tilt, outline, hilum_size) in zip((-1, 1), parts, strict=True):
            # the hilum opens anteromedially, across the long axis
            offset = 0.07 * size
            hilum = (centre[0] - side * offset * math.cos(0.6), centre[1] - offset * math.sin(0.6))
            sinus = where.ellipse(*hilum, 0.045 * hilum_size * size, 0.06 * hilum_size * size, angle=tilt)
            self.paint(where, torch.minimum(outline, -sinus), hu["kidney_cortex"], KIDNEYS)
            medulla = where.ellipse(*centre, 0.062 * size, 0.1 * size, angle=tilt)
            self.paint(where, torch.minimum(medulla, -sinus), hu["kidney_medulla"], KIDNEYS)
            self.paint(where, torch.minimum(sinus, outline), hu["renal_sinus"], 0)

    def pancreas(self, jitter_x: torch.Tensor, jitter_y: torch.Tensor) -> None:
        """Head (by the duodenum, in front of the IVC) to tail (at the splenic hilum), along a curve
        in front of the aorta, with the splenic vein along its back. The tail sits highest, so the
        gland appears from the tail down to the head."""
        hu, z = self.hu, self.z
        points = [(-0.16, 0.02), (-0.05, -0.08), (0.1, -0.06), (0.27, 0.0), (0.4, 0.08)]
        base = [0.09, 0.05, 0.06, 0.055, 0.04]
        points = [(x + jitter_x, y + jitter_y) for x, y in points]
        radii = []
        for i, r in enumerate(base):
            start = self.pancreas_start + 0.04 * (len(base) - 1 - i)
            radii.append(r * self.pancreas_scale * ellipsoid_profile(z, start, start + self.pancreas_length))
        where = self.patch(-0.35, 0.58, -0.26, 0.28)
        self.paint(where, where.tube(points, radii), hu["pancreas"], PANCREAS)
        vein = [(x, y + 0.8 * r) for (x, y), r in zip(points[2:], base[2:], strict=True)]
        vein_radii = [0.016 * (r > 0).float() for r in radii[2:]]
        self.paint(where, where.tube(vein, vein_radii), hu["ivc"], 0)

    def spine(self) -> None:
        """Vertebral body (cortex, cancellous core), posterior arch with canal, transverse and
        spinous processes."""
        hu = self.hu
        where = self.patch(-0.24, 0.24, 0.08, 0.58)
        body = where.circle(0.0, 0.235, 0.1)
        self.paint(where, body, hu["cortical_bone"], 0)
        self.paint(where, body - 0.02, hu["cancellous_bone"], 0)
        arch = torch.maximum(where.circle(0.0, 0.38, 0.055), where.ellipse(0.0, 0.45, 0.022, 0.05))
        arch = torch.maximum(arch, where.ellipse(0.0, 0.36, 0.14, 0.02))
        self.paint(where, arch, hu["cortical_bone"] - 200, 0)
        self.paint(where, where.circle(0.0, 0.38, 0.032), hu["fluid"], 0)

    def ribs(self, whole: Patch, body: torch.Tensor, cavity: torch.Tensor) -> None:
        """Rib cross-sections in the body wall, laterally and posteriorly: a periodic pattern around
        the body whose phase shifts from slice to slice; the anterior ones end first, going down."""
        d = self.local
        phi = torch.atan2(whole.y, whole.x)  # 0: patient's left, pi / 2: posterior
        depth = self.fat + 0.5 * self.wall
        ring = torch.minimum(0.018 - (body - depth).abs(), -cavity - 0.005)  # never over an organ
        pattern = torch.cos(12 * phi + d.uniform(0, 2 * math.pi))
        from_back = ((phi + math.pi / 2).remainder(2 * math.pi) - math.pi).abs()  # 0 at the back, pi in front
        reach = (2.3 - 2.2 * self.z).clamp(0, 2.3)  # angle from the back that ribs reach
        level = torch.minimum(ring, torch.minimum((pattern - 0.7) / 20, (reach - from_back) / 5))
        self.paint(whole, torch.minimum(level, (from_back - 0.35) / 5), self.hu["rib"])
