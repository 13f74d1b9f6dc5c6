"""Shared fixtures: seeding, paths to the config tree and the real data samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "conf"
SHARED_DATA = Path(os.environ.get("ADVMED_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Tests must never reach the network; W&B in particular must stay offline.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
os.environ["ADVMED_PROGRESS"] = "lines"  # tests see the log mode, even under pytest -s in a terminal


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


def pytest_collection_modifyitems(config, items):
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

    return train_unet(tmp_path_factory.mktemp("toy_unet"))


@pytest.fixture(scope="session")
def toy_attacker(tmp_path_factory, toy_unet_ckpt):
    """A D+V deformation attacker trained against ``toy_unet_ckpt``: (module, trainer, best.ckpt)."""
    from tests.models.deformation_toy import train_attacker

    return train_attacker(tmp_path_factory.mktemp("toy_attacker"), toy_unet_ckpt, xi=3.0)
