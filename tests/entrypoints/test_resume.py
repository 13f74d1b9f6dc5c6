"""Kill -9 a training run mid-epoch, rerun the same command with ``ckpt_path=last``: it continues from
``<run dir>/checkpoints/last.ckpt`` and ends exactly where the uninterrupted run ends (CPU, seeded)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.entrypoints.conftest import TINY, read_metrics

CLASSIFIER = ["experiment=demo", *TINY, "trainer.max_epochs=3"]
# SRGAN: two pre-training steps, then adversarial iterations (critic + generator, manual optimisation).
SRGAN = [
    "experiment=lockshin/srgan_tiny", "data.train_per_class=4", "data.val_per_class=2", "data.test_per_class=2",
    "data.batch_size=12", "model.pretrain_steps=2", "trainer.max_steps=-1", "trainer.max_epochs=3",
]


def _env(cwd: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "offline", "ADVMED_LOG_DIR": str(cwd / "outputs")}
    env.pop("WANDB_API_KEY", None)
    return env


def _train(args: list[str], run_dir: Path, cwd: Path) -> str:
    command = [sys.executable, "-m", "advmed.train", *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(command, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def _kill_after_first_epoch(args: list[str], run_dir: Path, cwd: Path) -> int:
    """Start the run, SIGKILL it as soon as the first last.ckpt is on disk (the next epoch has begun,
    or the save is still under way); return the epoch that checkpoint holds."""
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, "-m", "advmed.train", *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(command, cwd=cwd, env=_env(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not last.is_file():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before writing {last}"
        assert time.monotonic() < deadline, f"no {last} after 300 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists(), "the run finished before the kill: nothing was interrupted"
    return torch.load(last, map_location="cpu", weights_only=True)["epoch"]


def _check_resume(args: list[str], tmp_path: Path) -> tuple[Path, Path]:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _train(args, whole, tmp_path)
    epoch = _kill_after_first_epoch(args, killed, tmp_path)
    log = _train([*args, "ckpt_path=last"], killed, tmp_path)
    assert f"resuming from {killed / 'checkpoints' / 'last.ckpt'} (epoch {epoch}," in log
    assert read_metrics(killed) == read_metrics(whole)
    history = [(killed / "history.csv").read_text().splitlines(), (whole / "history.csv").read_text().splitlines()]
    assert history[0] == history[1] and len(history[0]) == 4  # header + 3 epochs, none repeated or lost
    return whole, killed


@pytest.mark.cluster
def test_a_killed_classifier_run_resumes_from_last_ckpt_to_the_same_metrics(tmp_path):
    _check_resume(CLASSIFIER, tmp_path)


@pytest.mark.cluster
def test_a_killed_gan_run_resumes_from_last_ckpt_to_the_same_weights_and_metrics(tmp_path):
    whole, killed = _check_resume(SRGAN, tmp_path)
    states = [torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for run in (whole, killed)]
    assert states[0]["global_step"] == states[1]["global_step"]
    for key, value in states[0]["state_dict"].items():
        assert torch.equal(value, states[1]["state_dict"][key]), key


def test_ckpt_path_last_without_a_checkpoint_starts_fresh(tmp_path):
    log = _train([*CLASSIFIER, "trainer.max_epochs=1", "test=false", "ckpt_path=last"], tmp_path / "run", tmp_path)
    assert "no " + str(tmp_path / "run" / "checkpoints" / "last.ckpt") + " yet, starting from scratch" in log
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["train/acc"] > 0


def test_a_truncated_checkpoint_stops_the_run_before_training_and_names_the_file(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, last)
    last.write_bytes(last.read_bytes()[:-300])
    proc = subprocess.run(
        [sys.executable, "-m", "advmed.train", *CLASSIFIER, "ckpt_path=last", f"hydra.run.dir={run}"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert f"'{last}' is not a readable PyTorch checkpoint (truncated, corrupt or another format" in proc.stderr
    assert not (run / "metrics.json").exists() and not (run / "history.csv").exists()


@pytest.mark.parametrize("restarts, expected", [("0", None), ("1", "last"), ("junk", None)])
def test_a_requeued_slurm_job_resumes_from_its_own_last_ckpt(tmp_path, monkeypatch, restarts, expected):
    from advmed.utils.resume import resolve_ckpt_path

    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"epoch": 2, "global_step": 30}, last)
    monkeypatch.setenv("SLURM_RESTART_COUNT", restarts)
    assert resolve_ckpt_path(None, tmp_path) == (str(last) if expected else None)
    # An explicit choice wins over the requeue rule.
    other = tmp_path / "other.ckpt"
    torch.save({"epoch": 1}, other)
    assert resolve_ckpt_path(str(other), tmp_path) == str(other)


def test_an_explicit_missing_checkpoint_is_a_clear_error(tmp_path):
    from advmed.utils.resume import resolve_ckpt_path

    with pytest.raises(FileNotFoundError, match="nope.ckpt' does not exist"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), tmp_path)
