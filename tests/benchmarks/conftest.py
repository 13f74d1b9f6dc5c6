"""Benchmark scripts loaded as modules for their smoke tests."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

from tests.conftest import REPO_ROOT

BENCH_DIR = REPO_ROOT / "experiments" / "benchmarks"


def _load_script(name: str) -> ModuleType:
    # Under a prefixed name, so that a script never stands in for another "stylegan2" or "srgan";
    # registered before it runs, as dataclasses need.
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def benchmark_scripts(*names: str) -> Iterator[dict[str, ModuleType]]:
    """``{name: module}`` of the scripts ``experiments/benchmarks/<name>.py``, plus their shared
    ``gan_rounds``. The scripts import their neighbours (timing.py, gan_rounds.py, classifier.py) by
    name, as when run from their folder, so that folder is on sys.path meanwhile. One torch thread,
    as the tiny settings pass with --threads 1 (several threads on a busy machine spend more time
    waiting for each other than computing); the caller's thread count and the wall clock are
    restored after."""
    threads = torch.get_num_threads()
    sys.path.insert(0, str(BENCH_DIR))
    torch.set_num_threads(1)
    try:
        scripts = {name: _load_script(name) for name in names}
        yield {"gan_rounds": importlib.import_module("gan_rounds"), **scripts}
    finally:
        sys.path.remove(str(BENCH_DIR))
        torch.set_num_threads(threads)
        if "gan_rounds" in sys.modules:
            sys.modules["gan_rounds"].use_clock("wall", torch.device("cpu"))
