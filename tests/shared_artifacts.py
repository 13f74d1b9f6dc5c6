"""Expensive test artefacts (tiny trained checkpoints) built once per test run, whichever
pytest-xdist worker asks first; the other workers wait for it and reuse it.

The tests run in parallel (``make test``: pytest-xdist, one process per core), and a session-scoped
fixture is per process: without this, every worker that needs the toy U-Net would train its own.
The artefact's folder lies in the run's shared temporary root (the parent of each worker's
``basetemp``, as pytest-xdist documents); a file lock makes one worker build it, and ``result.pkl``
(written last, atomically) marks it complete, so a worker killed half-way leaves nothing that is
reused.

A result that cannot be pickled (a trained module holding its trainer) is built once per worker
instead (:func:`cached_in_worker`).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

T = TypeVar("T")
_BUILT: dict[str, object] = {}  # this process's results, so a lock is taken once per name


def shared_root(tmp_path_factory) -> Path:
    """The temporary folder every worker of this test run shares (the run's own when not parallel)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build: Callable[[Path], T]) -> T:
    """``build(<empty folder>)`` once per test run under ``name``; its result must pickle (paths,
    numbers, dicts). Every caller, in any worker, gets the same result."""
    if name not in _BUILT:
        folder = shared_root(tmp_path_factory) / "shared" / name
        folder.parent.mkdir(parents=True, exist_ok=True)
        done = folder / "result.pkl"
        with FileLock(str(folder) + ".lock"):
            if not done.is_file():
                shutil.rmtree(folder, ignore_errors=True)  # left half-built by a killed worker
                folder.mkdir()
                result = build(folder)
                partial = done.with_suffix(".tmp")
                partial.write_bytes(pickle.dumps(result))
                os.replace(partial, done)
            _BUILT[name] = pickle.loads(done.read_bytes())
    return _BUILT[name]  # type: ignore[return-value]


def cached_in_worker(tmp_path_factory, name: str, build: Callable[[Path], T]) -> T:
    """``build(<fresh folder>)`` once per worker process under ``name``, for results that cannot be
    pickled (a trained LightningModule with its trainer, whose tests read its step counters): two
    test modules that share one and land on different workers each build it (seconds, for the toys)."""
    if name not in _BUILT:
        _BUILT[name] = build(tmp_path_factory.mktemp(name))
    return _BUILT[name]  # type: ignore[return-value]
