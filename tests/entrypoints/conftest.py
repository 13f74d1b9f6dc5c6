"""Tiny end-to-end runs shared by the entry-point tests (trained once per session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tests.conftest import CONFIG_DIR, REPO_ROOT
from tests.shared_artifacts import build_once

# Seconds on a CPU, yet the model learns something (conf/debug/tiny.yaml).
TINY = ["debug=tiny"]


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose like `python -m advmed.<entry>` would, with the run directory set to output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.override_dirname = "test"
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def run_module(module: str, args: list[str], cwd: Path, timeout: int = 600, script: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m module args` (or `python <repo>/module args` with script=True) in a fresh
    interpreter, as a user would from a shell."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "offline", "ADVMED_LOG_DIR": str(cwd / "outputs")}
    env.pop("WANDB_API_KEY", None)
    command = [sys.executable, str(REPO_ROOT / module)] if script else [sys.executable, "-m", module]
    proc = subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"python -m {module} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def read_metrics(job_dir: Path) -> dict[str, float]:
    return json.loads((job_dir / "metrics.json").read_text())["metrics"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny ResNet18 trained on synthetic histology; returns its run directory."""
    from advmed.train import train

    def fit(run_dir: Path) -> Path:
        train(compose_config("train", [*TINY, "attack=fgsm", "attack.eps=0.03"], run_dir))
        return run_dir

    return build_once(tmp_path_factory, "train_run", fit)


def kill_writer_at_batch(monkeypatch, batch: int):
    """Make the dataset writer stop with a KeyboardInterrupt (as a kill would) when it reaches ``batch``;
    returns the real ``seed_batch`` to put back before the rerun."""
    from advmed.data import writers

    real_seed_batch = writers.seed_batch

    def killed(seed, index):
        if index == batch:
            raise KeyboardInterrupt
        real_seed_batch(seed, index)

    monkeypatch.setattr(writers, "seed_batch", killed)
    return real_seed_batch
