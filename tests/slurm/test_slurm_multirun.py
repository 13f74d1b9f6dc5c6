"""Sweeps sent to the real SLURM test cluster through `hydra/launcher=slurm`, as a user sends them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.entrypoints.conftest import TINY, read_metrics
from tests.slurm.conftest import TEST_LAUNCHER, finish, finished_job, submitit_job_ids, submitit_logs

pytestmark = [pytest.mark.slurm, pytest.mark.cluster]


def _job_id(job_dir: Path) -> str:
    """The SLURM job that ran a sweep point, as Hydra recorded it (submitit's job id)."""
    return str(yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def test_eps_sweep_runs_as_two_slurm_jobs(tmp_path, slurm_cluster, launcher):
    sweep_run = launcher("advmed.train", ["-m", *TEST_LAUNCHER, "experiment=demo", *TINY, "attack.eps=0.02,0.05"],
                         cwd=tmp_path, what="the SLURM eps sweep")
    finish(sweep_run, timeout=900, jobs_root=tmp_path)

    (sweep,) = tmp_path.glob("outputs/train/multiruns/*")
    jobs = {p.parent.name: p.parent for p in sweep.glob("*/metrics.json")}
    assert sorted(jobs) == ["attack.eps=0.02", "attack.eps=0.05"], sorted(p.name for p in sweep.iterdir())

    weak, strong = read_metrics(jobs["attack.eps=0.02"]), read_metrics(jobs["attack.eps=0.05"])
    assert strong["test/adv_acc"] <= weak["test/adv_acc"]  # a larger budget never leaves the model more accurate
    assert weak["test/acc"] == strong["test/acc"]  # the same seeded training: only the attack differs

    slurm_ids = submitit_job_ids(sweep)
    assert len(slurm_ids) == 2, slurm_ids
    for name, job_dir in jobs.items():
        eps = name.split("=")[1]
        assert f"attack.eps={eps}" in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        job_id = _job_id(job_dir)
        assert job_id in slurm_ids, (job_id, slurm_ids)
        # SLURM's own record: the job completed on this host, in the partition asked for, from the launch dir
        record = finished_job(job_id)
        assert (record["JobState"], record["NodeList"], record["Partition"]) == ("COMPLETED", slurm_cluster, "debug")
        assert Path(record["WorkDir"]) == tmp_path
        log = submitit_logs(sweep, job_id)
        assert f"job_id={job_id}, hostname={slurm_cluster}" in log
        assert "Job completed successfully" in log


def test_ddp_job_gets_one_slurm_task_per_device(tmp_path, slurm_cluster, launcher):
    """tasks_per_node follows trainer.devices (conf/hydra/launcher/slurm.yaml); Lightning reads its
    ranks from SLURM and trains on both (gloo on CPU); the report is written once."""
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "++trainer.strategy=ddp"]
    run = launcher("advmed.train", ["-m", *TEST_LAUNCHER, "experiment=demo", *TINY, *ddp], cwd=tmp_path, what="the SLURM DDP job")
    finish(run, timeout=900, jobs_root=tmp_path)

    (job_dir,) = (p.parent for p in tmp_path.glob("outputs/train/multiruns/*/*/metrics.json"))
    job_id = _job_id(job_dir)
    record = finished_job(job_id)
    assert (record["JobState"], record["NumTasks"], record["NodeList"]) == ("COMPLETED", "2", slurm_cluster)
    for rank in (0, 1):
        task_log = "".join(p.read_text(errors="replace") for p in job_dir.parent.glob(f".submitit/{job_id}/{job_id}_{rank}_log.*"))
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in task_log, task_log[-3000:]
    assert "test/adv_acc" in read_metrics(job_dir)
