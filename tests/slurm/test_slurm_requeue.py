"""A training job requeued mid-run on the real SLURM test cluster (`scontrol requeue`, what preemption
does) resumes from its own last.ckpt and ends with the metrics of an uninterrupted run."""

from __future__ import annotations

import re
import subprocess

import pytest
import torch

from tests.entrypoints.conftest import TINY, read_metrics
from tests.slurm.conftest import (
    TEST_LAUNCHER,
    finish,
    finished_job,
    submitit_job_ids,
    submitit_logs,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.cluster]

EPOCHS = 5  # enough epochs after the requeue point (end of the second) that the job is still training then
OVERRIDES = ["experiment=demo", *TINY, f"trainer.max_epochs={EPOCHS}"]
REQUEUE_AFTER_EPOCH = 1  # Lightning's 0-based epoch stored in last.ckpt: two epochs done


def test_requeued_job_resumes_from_last_ckpt_with_the_uninterrupted_metrics(tmp_path, slurm_cluster, launcher):
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    # The reference trains beside the SLURM job: the same overrides, locally, never interrupted.
    reference = launcher("advmed.train", [*OVERRIDES, f"hydra.run.dir={tmp_path / 'reference'}"], cwd=tmp_path,
                         what="the uninterrupted local run")
    sweep_run = launcher("advmed.train", ["-m", *TEST_LAUNCHER, *OVERRIDES], cwd=cluster_dir, what="the SLURM training job")

    seen: dict = {}

    def last_ckpt_past_first_epochs():
        for ckpt in cluster_dir.glob("outputs/train/multiruns/*/*/checkpoints/last.ckpt"):
            stamp = ckpt.stat().st_mtime_ns
            if seen.get(ckpt) != stamp:  # read each version once (written atomically: always whole)
                seen[ckpt] = stamp
                epoch = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["epoch"]
                if epoch >= REQUEUE_AFTER_EPOCH:
                    return ckpt, epoch
        return None

    ckpt, epoch_at_requeue = wait_for(last_ckpt_past_first_epochs, 600, f"last.ckpt of epoch {REQUEUE_AFTER_EPOCH}", sweep_run)
    job_dir, sweep = ckpt.parents[1], ckpt.parents[2]
    (job_id,) = submitit_job_ids(sweep)
    requeue = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=30)
    assert requeue.returncode == 0, f"scontrol requeue {job_id}: {requeue.stderr}"

    finish(sweep_run, timeout=900, jobs_root=cluster_dir)
    finish(reference, timeout=600)

    record = finished_job(job_id)
    assert (record["JobState"], record["Restarts"], record["NodeList"]) == ("COMPLETED", "1", slurm_cluster)
    log = submitit_logs(sweep, job_id)
    assert log.count(f"Starting with JobEnvironment(job_id={job_id},") == 2, log[-3000:]
    resumed = re.search(r"resuming from (\S+) \(epoch (\d+)", log)
    assert resumed, f"no 'resuming from' line in the job's log:\n{log[-3000:]}"
    assert resumed.group(1) == str(ckpt)
    # it went on from where the requeue stopped it, not from the start nor from a finished run
    assert epoch_at_requeue <= int(resumed.group(2)) < EPOCHS - 1

    reference_metrics, resumed_metrics = read_metrics(tmp_path / "reference"), read_metrics(job_dir)
    assert sorted(resumed_metrics) == sorted(reference_metrics)
    assert resumed_metrics == pytest.approx(reference_metrics, abs=1e-6)
