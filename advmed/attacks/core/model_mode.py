"""The model-mode guard of an attack call: eval mode while attacking, each submodule's own mode after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the attack; afterwards every submodule gets its own mode back (a model in
    train mode with frozen, eval-mode BatchNorm layers stays exactly that way)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
