"""FAB's projection of points onto the intersection of a hyperplane and the box [0, 1]^D, batched.

Croce & Hein (ICML 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
attack") step by projecting onto a linearised decision boundary restricted to the image domain:

    min_delta ||delta||_p   s.t.   <w, delta> = -c,   0 <= z + delta <= 1,

for a point ``z`` with ``c = <w, z> + b`` (the value of the affine function at ``z``). The
original code solves it for L-inf and L2 by sorting and a bisection over the sorted
breakpoints (``fab_projections.py`` of fra31/auto-attack). This module derives both from one
piecewise-linear equation and solves it with ``sort``, ``cumsum`` and ``searchsorted`` (no
per-sample Python loop, no bisection):

Assume ``c > 0`` (otherwise flip the signs of ``w`` and ``c``). Every coordinate then moves
downhill, ``delta_i = -sign(w_i) * move_i`` with ``0 <= move_i <= r_i``, its room inside the box
(``r_i = z_i`` when ``w_i > 0``, ``1 - z_i`` when ``w_i < 0``). The KKT conditions give, for a
scalar ``t >= 0``,

* L-inf: ``move_i = min(t, r_i)`` (every free coordinate moves by the same amount ``t``);
* L2:    ``move_i = min(t |w_i|, r_i)`` (the move is proportional to ``|w_i|`` until it clips).

In both, ``move_i = min(t m_i, r_i)`` with ``m_i = 1`` or ``|w_i|``, and the decrease of the
affine function, ``F(t) = sum_i |w_i| move_i = sum_i min(t s_i, a_i)`` with slope
``s_i = |w_i| m_i`` and cap ``a_i = |w_i| r_i``, is continuous, piecewise linear and
nondecreasing, with breakpoints ``tau_i = r_i / m_i``. The smallest ``t`` with ``F(t) = c`` is
the optimum: sort the breakpoints, evaluate ``F`` at each with two cumulative sums, find the
first breakpoint where ``F >= c`` (``searchsorted``) and solve the linear piece before it.

When the hyperplane misses the box (``F(max tau) < c``) there is no feasible point; the result
is then the box corner that gets closest to it (every coordinate moved by its whole room), as
in the original.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORMS = ("linf", "l2")


def project_onto_hyperplane_in_box(z: Tensor, w: Tensor, c: Tensor, norm: str) -> Tensor:
    """The smallest step ``delta`` (L-inf or L2) that puts ``z + delta`` on the hyperplane
    ``<w, xi - z> + c = 0`` inside ``[0, 1]^D``, for each row.

    Args:
        z: points ``(n, D)`` in [0, 1].
        w: normals ``(n, D)``.
        c: ``(n,)``, the affine function's value at ``z`` (``<w, z> + b``).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``delta`` ``(n, D)``: ``<w, delta> = -c`` and ``0 <= z + delta <= 1``; when no point of the
        box lies on the hyperplane, the step to the box corner nearest to it. Coordinates with
        ``w_i = 0`` never move.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    # Orient every row so that the affine function must decrease (c >= 0).
    flip = torch.where(c < 0, -1.0, 1.0).to(w.dtype).unsqueeze(1)
    u, target = w * flip, c.abs()
    direction = -torch.sign(u)  # each coordinate's downhill direction (0 where w_i = 0)
    room = torch.where(u > 0, z, 1 - z) * (u != 0)  # how far it can go inside the box
    mag = u.abs()
    rate = torch.ones_like(mag) if norm == "linf" else mag  # m_i
    slope, cap = mag * rate, mag * room  # s_i, a_i
    # Breakpoints tau_i = r_i / m_i; coordinates that cannot help (s_i = 0) sort first with
    # tau = 0, where they add nothing to F.
    tau = torch.where(slope > 0, room / torch.where(rate > 0, rate, 1), 0)
    tau, order = torch.sort(tau, dim=1)
    slope, cap = slope.gather(1, order), cap.gather(1, order)

    cap_upto = torch.cumsum(cap, dim=1)  # sum_{j <= k} a_j: the coordinates clipped by tau_k
    slope_after = slope.sum(1, keepdim=True) - torch.cumsum(slope, dim=1)  # sum_{j > k} s_j
    at_breaks = cap_upto + tau * slope_after  # F(tau_k), nondecreasing in k
    at_breaks = torch.cummax(at_breaks, dim=1).values  # float rounding must not unsort it
    k = torch.searchsorted(at_breaks, target.unsqueeze(1).contiguous()).squeeze(1)
    feasible = k < z.shape[1]

    # On the piece [tau_{k-1}, tau_k]: F(t) = sum_{j < k} a_j + t * sum_{j >= k} s_j.
    kk = k.clamp(max=z.shape[1] - 1).unsqueeze(1)
    before = (cap_upto.gather(1, kk) - cap.gather(1, kk)).squeeze(1)
    rising = (slope_after.gather(1, kk) + slope.gather(1, kk)).squeeze(1)
    t = (target - before).clamp_min(0) / rising.clamp_min(torch.finfo(rising.dtype).tiny)
    move = torch.minimum(t.unsqueeze(1) * rate, room)
    move = torch.where(feasible.unsqueeze(1), move, room)
    return direction * move
