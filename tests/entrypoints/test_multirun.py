"""Sweeps as a user launches them: `python -m advmed.train -m ...` in a fresh interpreter."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONFIG_DIR, REPO_ROOT
from tests.entrypoints.conftest import TINY, read_metrics, run_module

SWEEP = TINY


def _job_dirs(root: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in root.glob("outputs/train/multiruns/*/*/metrics.json")}


def test_basic_multirun_makes_one_directory_per_override(tmp_path):
    run_module("advmed.train", ["-m", "experiment=demo", *SWEEP, "attack.eps=0.0,0.3"], cwd=tmp_path)
    jobs = _job_dirs(tmp_path)
    assert sorted(jobs) == ["attack.eps=0.0", "attack.eps=0.3"]
    clean, attacked = read_metrics(jobs["attack.eps=0.0"]), read_metrics(jobs["attack.eps=0.3"])
    assert clean["test/adv_acc"] == clean["test/acc"]  # eps=0 changes nothing
    assert attacked["test/adv_acc"] < clean["test/adv_acc"]
    overrides = yaml.safe_load((jobs["attack.eps=0.3"] / ".hydra" / "overrides.yaml").read_text())
    assert "attack.eps=0.3" in overrides


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_same_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_module("advmed.train", ["-m", "hydra/launcher=local", "experiment=demo", *SWEEP, "attack.eps=0.0,0.3"], cwd=tmp_path)
    jobs = _job_dirs(tmp_path)
    assert sorted(jobs) == ["attack.eps=0.0", "attack.eps=0.3"]
    assert read_metrics(jobs["attack.eps=0.3"])["test/adv_acc"] < read_metrics(jobs["attack.eps=0.0"])["test/adv_acc"]
    # submitit kept each job's own log next to the sweep
    assert list(tmp_path.glob("outputs/train/multiruns/*/.submitit/*/*_log.out"))


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240


@pytest.mark.cluster
def test_wandb_runs_offline_one_run_per_job_with_the_resolved_config(tmp_path):
    run_module("advmed.train", ["-m", "experiment=demo", *SWEEP, "logger=wandb", "attack.eps=0.0,0.3"], cwd=tmp_path)
    jobs = _job_dirs(tmp_path)
    assert sorted(jobs) == ["attack.eps=0.0", "attack.eps=0.3"]
    for name, job in jobs.items():
        runs = list(job.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"{name}: {runs}"
        # wandb >= 0.19 keeps an offline run's config only in its record log, as compact JSON.
        record_log = runs[0].read_bytes()
        eps = name.split("=")[1]
        assert f'{{"_target_":"advmed.attacks.FGSM","eps":{eps},'.encode() in record_log, name
        assert b'"inference_mode":false' in record_log  # the trainer node: the whole config is attached


@pytest.mark.slow
def test_training_set_size_sweep_is_aggregated_into_one_table(tmp_path):
    import csv

    run_module("advmed.train", [
        "-m", "experiment=pgd_study/train_size", *TINY, "study.eps=[0.01,0.2]", "study.max_iter=2",
        "study.max_images=32", "data.train_fraction=0.5,1.0",
    ], cwd=tmp_path)
    sweep = next(tmp_path.glob("outputs/pgd_study/multiruns/*"))
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [job.split(",")[0] for job in jobs] == ["data.train_fraction=0.5", "data.train_fraction=1.0"]
    run_module(str(Path("experiments/pgd_study/aggregate.py")), [str(sweep)], cwd=tmp_path, script=True)
    rows = list(csv.DictReader((sweep / "train_size.csv").open()))
    assert len(rows) == 4  # 2 fractions x 2 eps
    assert {r["train_fraction"] for r in rows} == {"0.5", "1.0"}
    assert (sweep / "fig3d_success_vs_train_size.png").is_file()


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare for a network namespace")
def test_wandb_online_without_a_network_falls_back_to_offline_and_the_run_finishes(tmp_path):
    # A network namespace with no interfaces: every connection fails, as on a cluster node without internet.
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here (needs root or user namespaces)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "online", "ADVMED_LOG_DIR": str(tmp_path / "outputs"),
           "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567"}
    run = tmp_path / "run"
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "advmed.train", "experiment=demo", *TINY, "trainer.max_epochs=1",
         "logger=wandb", f"hydra.run.dir={run}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B online logging unavailable (cannot reach api.wandb.ai:443" in proc.stdout + proc.stderr
    assert f"wandb sync {run}/wandb/offline-run-*" in proc.stdout + proc.stderr
    assert len(list(run.glob("wandb/offline-run-*/run-*.wandb"))) == 1
    assert read_metrics(run)["test/acc"] >= 0


def test_server_reachable_names_the_host_and_port_it_could_not_reach():
    from advmed.utils.wandb_fallback import server_reachable

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert server_reachable(f"http://127.0.0.1:{port}", timeout_s=2).startswith(f"cannot reach 127.0.0.1:{port} (")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert server_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=2) is None
