"""Shared fixtures: seeding, paths to the config tree and the real data samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.shared_artifacts import build_once, cached_in_worker

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "conf"
SHARED_DATA = Path(os.environ.get("ADVMED_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Tests must never reach the network; W&B in particular must stay offline.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
os.environ["ADVMED_PROGRESS"] = "lines"  # tests see the log mode, even under pytest -s in a terminal


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (``make test``), give each worker its share of the cores: torch's intra-op
    threads here, and OMP / MKL threads for the interpreters the tests start, so that N workers
    run N x (cores / N) threads instead of fighting with N x cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not workers:
        return
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    torch.set_num_threads(threads)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)


_share_the_cores_between_workers()


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data samples beside the checkout; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (set ADVMED_SHARED_DATA)")
    return SHARED_DATA


# Test modules that hold an end-to-end run of a minute or more (a paper's smoke pipeline, a sweep of
# interpreters): scheduled first, so that under pytest-xdist (`make test`, --dist loadscope: one module
# per worker at a time, in this order: --no-loadscope-reorder) no worker starts one while the others
# have run out of work.
LONG_MODULES = (
    "tests/entrypoints/test_lockshin_pipeline.py",
    "tests/entrypoints/test_robust_training.py",
    "tests/entrypoints/test_lockshin_stylegan2.py",
    "tests/entrypoints/test_multirun.py",
    "tests/entrypoints/test_chen.py",
    "tests/entrypoints/test_pervin.py",
    "tests/entrypoints/test_snap.py",
    "tests/entrypoints/test_resume.py",
    "tests/entrypoints/test_card.py",
    "tests/docs/test_doc_commands_run.py",
    "tests/studies/test_pgd_study.py",
    "tests/docs/test_docs.py",
    "tests/docs/test_doc_commands.py",
)
# Unit tests: what `make test-fast` runs (the inner loop). The rest (end-to-end runs of the entry
# points, the benchmarks' own checks) is marked `e2e` here, by folder.
E2E_FOLDERS = ("tests/entrypoints/", "tests/benchmarks/", "tests/slurm/")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(E2E_FOLDERS):
            item.add_marker(pytest.mark.e2e)
    rank = {module: i for i, module in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def toy_unet_ckpt(tmp_path_factory) -> Path:
    """best.ckpt of a tiny U-Net trained on the toy segmentation data (tests/models/segmentation_toy.py)."""
    from tests.models.deformation_toy import train_unet

    return build_once(tmp_path_factory, "toy_unet", train_unet)


@pytest.fixture(scope="session")
def toy_attacker(tmp_path_factory, toy_unet_ckpt):
    """A D+V deformation attacker trained against ``toy_unet_ckpt``: (module, metrics, best.ckpt)."""
    from tests.models.deformation_toy import train_attacker

    return cached_in_worker(tmp_path_factory, "toy_attacker", lambda root: train_attacker(root, toy_unet_ckpt, xi=3.0))
