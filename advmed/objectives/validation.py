"""Checks of objective settings: one clear message naming the config key, the value and the fix."""

from __future__ import annotations

from advmed.attacks.core.validation import as_float


def check_unit(name: str, value: object, group: str = "objective") -> float:
    """A budget, step or fraction in [0, 1] (of the [0, 1] intensity range); strings such as
    ``"8/255"`` are accepted, as Hydra passes ``objective.eps=8/255``. ``group`` is the config node
    the message names (``objective``, ``callbacks.overfitting_guard``)."""
    number = as_float(f"{group}.{name}", value)
    if not 0.0 <= number <= 1.0:
        hint = f" (did you mean {number:g}/255?)" if number > 1 else ""
        raise ValueError(
            f"{group}.{name}={number:g} must be in [0, 1], a fraction of the [0, 1] intensity range{hint}"
        )
    return number


def check_optional_unit(name: str, value: object) -> float | None:
    """:func:`check_unit`, or None for the objective's default rule."""
    return None if value is None else check_unit(name, value)


def check_beta(value: object) -> float:
    """The weight of a robustness term: a finite number >= 0 (0: the natural loss alone)."""
    beta = as_float("objective.beta", value)
    if beta < 0:
        raise ValueError(
            f"objective.beta={beta:g} must be >= 0: it weighs the robustness term against the natural one "
            "(0 trains on the natural loss alone; the papers use 1 to 6)"
        )
    return beta


def check_steps(value: object, name: str = "steps", group: str = "objective") -> int:
    """Iterations of an inner maximisation (or another count, ``group.name``): an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{group}.{name}={value!r} must be an integer >= 1")
    return value


def check_ignore_index(value: object) -> int | None:
    """A label to leave out of the loss (segmentation), or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"objective.ignore_index={value!r} must be an integer label (e.g. 255) or null")
    return value
