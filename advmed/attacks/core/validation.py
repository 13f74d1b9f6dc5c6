"""Checks of attack arguments, shared by every attack: one clear message naming the value and the fix."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from numbers import Real

import torch

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}



def as_float(name: str, value: object) -> float:
    """A finite float from a number or a string such as ``"8/255"`` (what Hydra passes for
    ``attack.eps=8/255`` on the command line)."""
    if isinstance(value, str):
        try:
            value = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_eps(value: object, *, upper: float | None = 1.0) -> float:
    """eps in [0, upper] (L-inf: a fraction of the [0, 1] intensity range) or >= 0 when upper is None."""
    eps = as_float("eps", value)
    if upper is None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0 (an L2 radius in [0, 1]-pixel units), got {eps:g}")
    elif not 0 <= eps <= upper:
        hint = f" (did you mean {eps:g}/255?)" if eps > upper else ""
        raise ValueError(
            f"eps must be in [0, {upper:g}] (a fraction of the [0, 1] intensity range), got {eps:g}{hint}"
        )
    return eps


def check_alpha(value: object) -> float | None:
    """Step size > 0, or None for the attack's default rule."""
    if value is None:
        return None
    alpha = as_float("alpha", value)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (or null for the default step rule), got {alpha:g}")
    return alpha


def check_count(name: str, value: object) -> int:
    """A count of iterations, restarts, targets, queries: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_steps(value: object) -> int:
    return check_count("steps", value)


def looks_like_probabilities(output: torch.Tensor) -> bool:
    """True when every row of ``output`` (over dim 1) is in [0, 1] and sums to 1 within 1e-4:
    a softmax output rather than logits."""
    z = output.detach().float()
    return bool(z.min() >= 0 and z.max() <= 1 and (z.sum(1) - 1).abs().max() <= 1e-4)


def check_seed(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"seed must be an integer or null, got {value!r}")
    return value


def check_classes(name: str, value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty list of class indices or null, got {value!r}")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value):
        raise ValueError(f"{name} must hold class indices >= 0, got {list(value)!r}")
    return tuple(value)


def check_amp(value: object) -> torch.dtype | None:
    if value is None or value in (torch.bfloat16, torch.float16):
        return value
    if value in _AMP_DTYPES:
        return _AMP_DTYPES[value]
    raise ValueError(f"amp_dtype must be one of {sorted(_AMP_DTYPES)} or null, got {value!r}")
