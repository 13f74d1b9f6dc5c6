"""Shapes of the CT phantom (:mod:`advmed.data.ct.phantom`) as levels on canonical body coordinates.

Geometry lives in canonical body coordinates: x to the image's right (patient's left), y down
(posterior); the body spans about x in [-0.84, 0.84], y in [-0.62, 0.57]. Each patient maps them
onto pixels by its size, antero-posterior ratio and pose. Shapes are *levels*: about the signed
distance to their outline in canonical units, positive inside. Organs are computed only in a box
of pixels (a :class:`Patch`) that holds them in every slice of the chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from advmed.data.tissue_rendering import Draws

Box = tuple[slice, slice]
WHOLE_IMAGE: Box = (slice(None), slice(None))


def outline_wobble(d: Draws, amplitude: float, square: float = 0.0) -> tuple[torch.Tensor, ...]:
    """Fourier coefficients of an outline's relative radius wobble: 2nd and 3rd harmonics, and a
    4th (cosine only) that squares the outline by ``square``."""
    return (*(d.uniform(-amplitude, amplitude) for _ in range(4)), square)


def ellipsoid_profile(z: torch.Tensor, start, end) -> torch.Tensor:
    """Cross-section scale of an ellipsoid-like organ spanning [start, end] in z: 0 outside it."""
    t = (2 * z - start - end) / (end - start)
    return (1 - t * t).clamp(min=0).sqrt()


class Patch:
    """Canonical coordinates (B, h, w) of the pixels in ``box`` of every slice, and shapes on them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, box: Box) -> None:
        self.box = box
        self.x, self.y = x[:, box[0], box[1]], y[:, box[0], box[1]]

    def ellipse(self, cx, cy, ax, ay, angle=0.0, wobble=None, ay_back=None) -> torch.Tensor:
        """A rotated ellipse with a wobbly outline (see :func:`outline_wobble`); ``ay_back``: its half-axis
        behind the centre. Zero axes give an empty shape (the organ is absent from the slice)."""
        dx, dy = self.x - cx, self.y - cy
        if not isinstance(angle, float) or angle != 0.0:
            angle = torch.as_tensor(angle)
            cos, sin = torch.cos(angle), torch.sin(angle)
            dx, dy = cos * dx + sin * dy, cos * dy - sin * dx
        ax, ay = torch.as_tensor(ax), torch.as_tensor(ay)
        empty = (torch.minimum(ax, ay) <= 1e-3).float()
        ax, ay = ax.clamp(min=1e-3), ay.clamp(min=1e-3)
        reach = torch.maximum(ax, ay)  # no point of the outline lies farther from the centre
        if ay_back is not None:
            reach = torch.maximum(reach, torch.as_tensor(ay_back))
            ay = torch.where(dy > 0, torch.as_tensor(ay_back), ay)
        qx, qy = dx / ax, dy / ay
        rho = (qx * qx + qy * qy).sqrt().clamp_(min=1e-6)
        c, s = qx / rho, qy / rho  # direction from the centre; |gradient of rho| = |(c / ax, s / ay)|
        gx, gy = c / ax, s / ay
        radius = 1.0
        if wobble is not None:
            c2, s2 = c * c - s * s, 2 * c * s
            c3, s3 = c * c2 - s * s2, s * c2 + c * s2
            radius = 1 + wobble[0] * c2 + wobble[1] * s2 + wobble[2] * c3 + wobble[3] * s3
            if wobble[4]:
                radius = radius + wobble[4] * (c2 * c2 - s2 * s2)
            reach = reach * (1 + sum(abs(w) for w in wobble))
        # First-order distance (exact at the outline), capped by the distance to the circle that
        # holds the outline: far off a thin ellipse the first order alone is much too small.
        first_order = (radius - rho) / (gx * gx + gy * gy).sqrt().clamp_(min=1e-6)
        return torch.minimum(first_order, reach - (dx * dx + dy * dy).sqrt()) - empty

    def circle(self, cx, cy, r) -> torch.Tensor:
        dx, dy = self.x - cx, self.y - cy
        return r - (dx * dx + dy * dy).sqrt()

    def tube(self, points: Sequence[tuple], radii: Sequence[torch.Tensor]) -> torch.Tensor:
        """A chain of capsules through ``points`` whose radius varies linearly along each segment;
        a segment with both radii zero is absent."""
        level = None
        for (x0, y0), (x1, y1), r0, r1 in zip(points[:-1], points[1:], radii[:-1], radii[1:], strict=True):
            ex, ey = x1 - x0, y1 - y0
            ox, oy = self.x - x0, self.y - y0
            t = ((ox * ex + oy * ey) / (ex * ex + ey * ey)).clamp_(0, 1)
            ox, oy = ox - t * ex, oy - t * ey
            segment = r0 + t * (r1 - r0) - (ox * ox + oy * oy).sqrt() - (r0 + r1 <= 0).float()
            level = segment if level is None else torch.maximum(level, segment)
        return level
