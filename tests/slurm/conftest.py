"""The real SLURM of ``tests/slurm/cluster.sh`` for the tests marked ``slurm``.

The tests never start the cluster: CI's ``.ci/run`` (and ``make slurm-up`` by hand) does. Every test
in this folder is skipped, with the reason, when the SLURM commands are missing or the controller
does not answer. Jobs go through ``hydra/launcher=slurm`` exactly as a user submits them, with the
launcher sized for the one-node CPU test cluster (``TEST_LAUNCHER``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

START_HINT = "start the test cluster with `bash tests/slurm/cluster.sh up` (or `make slurm-up`; root, Debian 12)"

# conf/hydra/launcher/slurm.yaml sized for the test cluster's `debug` partition: CPU only, one core a job,
# so a two-point sweep runs both jobs at once on a two-core machine.
TEST_LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=30",
]


def pytest_configure(config):
    # Also declared in pyproject.toml; repeated here so the folder runs under --strict-markers on its own.
    config.addinivalue_line(
        "markers", "slurm: needs the test SLURM cluster of tests/slurm/cluster.sh; skipped with the reason when it is not up"
    )


def _command(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def slurm_unavailable_reason() -> str | None:
    """Why the SLURM tests cannot run here, or None when the test cluster answers."""
    missing = [tool for tool in ("sinfo", "srun", "sbatch", "scontrol", "scancel") if shutil.which(tool) is None]
    if missing:
        return f"SLURM commands not found ({', '.join(missing)}): {START_HINT}"
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        return 'hydra-submitit-launcher is not installed: pip install -e ".[slurm]"'
    try:
        ping = _command(["scontrol", "ping"])
        if ping.returncode != 0 or "UP" not in ping.stdout:
            answer = (ping.stdout + ping.stderr).strip().splitlines() or ["no answer"]
            return f"the SLURM controller does not answer ({answer[0]}): {START_HINT}"
        partition = _command(["sinfo", "-h", "-p", "debug", "-o", "%a %t"])
    except subprocess.TimeoutExpired as error:
        return f"`{' '.join(error.cmd)}` did not answer within {error.timeout:.0f} s: {START_HINT}"
    states = partition.stdout.split()
    if partition.returncode != 0 or not states:
        return f"no `debug` partition ({(partition.stdout + partition.stderr).strip()}): {START_HINT}"
    if states[0] != "up" or not any(s.rstrip("*~#!%$@^-") in ("idle", "mix", "alloc", "comp") for s in states[1:]):
        return f"the `debug` partition has no usable node (sinfo: {partition.stdout.strip()}): {START_HINT}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The test cluster's host name; skips the test with the reason when SLURM is not up."""
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return socket.gethostname().split(".")[0]


@pytest.fixture(autouse=True)
def _needs_slurm(slurm_cluster):
    """Every test in this folder needs the cluster."""


@pytest.fixture
def launcher(tmp_path):
    """``launch`` for a test: after it, every process it launched is stopped and every SLURM job
    submitted under ``tmp_path`` that is still queued or running is cancelled (a failed or timed-out
    test leaves nothing behind on the cluster)."""
    launched: list[Launched] = []

    def start(module: str, args: list[str], cwd: Path, what: str) -> Launched:
        launched.append(launch(module, args, cwd, what))
        return launched[-1]

    yield start
    for process in launched:
        process.stop()
    folders = (p for submitit in tmp_path.rglob(".submitit") for p in submitit.iterdir())
    job_ids = sorted(p.name for p in folders if re.fullmatch(r"\d+(_\d+)?", p.name))
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)


def job_env(cwd: Path) -> dict[str, str]:
    """The environment of `python -m advmed.<entry>` as a user runs it from ``cwd`` (as in
    tests/entrypoints/conftest.py's run_module). sbatch exports it to the jobs: they import advmed from
    the checkout through PYTHONPATH and run the same interpreter (submitit uses sys.executable)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "WANDB_MODE": "offline",
        "ADVMED_LOG_DIR": str(cwd / "outputs"),
        "OMP_NUM_THREADS": "1",  # the same arithmetic in the SLURM job and in the local reference run
    }
    env.pop("WANDB_API_KEY", None)
    return env


@dataclass
class Launched:
    """A `python -m <module> ...` running in the background; its output goes to ``log`` (a file, not a
    pipe: a multirun launcher waiting for its jobs prints for minutes and must never block on a full pipe)."""

    proc: subprocess.Popen
    log: Path
    what: str

    def output(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def launch(module: str, args: list[str], cwd: Path, what: str) -> Launched:
    """Start `python -m module args` from ``cwd`` in the background, as a user would from a shell."""
    log = cwd / (re.sub(r"\W+", "_", what).strip("_") + ".log")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=cwd, env=job_env(cwd),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return Launched(proc, log, what)


# SLURM states of a job that ended without finishing its work.
FAILED_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
# A requeued job passes through states briefly; a failure must last this long to count.
FAILED_FOR_S = 20


def finish(launched: Launched, timeout: float, jobs_root: Path | None = None) -> str:
    """Wait for a launcher; its output, or an AssertionError with the output and the SLURM queue.

    The test cluster has no accounting database, so submitit cannot see a job that SLURM ended without
    a result (killed, out of time) and its launcher would wait forever: with ``jobs_root``, a job of a
    sweep under it that stays in a failed state for ``FAILED_FOR_S`` fails the wait at once, with its log.
    """
    deadline, failed_since = time.monotonic() + timeout, {}
    while True:
        try:
            launched.proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            launched.stop()
            raise AssertionError(f"{launched.what} did not finish within {timeout:.0f} s\n{launched.output()}\n{queue()}")
        for sweep, job_id in unfinished_jobs(jobs_root) if jobs_root else []:
            state = scontrol_job(job_id).get("JobState", "")
            if state not in FAILED_STATES:
                failed_since.pop(job_id, None)
            elif time.monotonic() - failed_since.setdefault(job_id, time.monotonic()) > FAILED_FOR_S:
                launched.stop()
                raise AssertionError(
                    f"SLURM job {job_id} of {launched.what} ended {state} without a result; its log:\n"
                    f"{submitit_logs(sweep, job_id)[-4000:]}\n{queue()}"
                )
    if launched.proc.returncode != 0:
        raise AssertionError(f"{launched.what} failed (exit {launched.proc.returncode}):\n{launched.output()}\n{queue()}")
    return launched.output()


def unfinished_jobs(root: Path) -> list[tuple[Path, str]]:
    """(sweep dir, job id) of every SLURM job of the sweeps under ``root`` that has no submitit result yet."""
    return [
        (submitit.parent, job_id)
        for submitit in root.rglob(".submitit")
        for job_id in submitit_job_ids(submitit.parent)
        if not any((submitit / job_id).glob("*_result.pkl"))
    ]


def queue() -> str:
    """`squeue` for an error message."""
    try:
        return "squeue:\n" + _command(["squeue", "-o", "%i %j %T %r %N"]).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"squeue failed: {error}"


def submitit_job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM job ids that ran a sweep's points: submitit's folders `<sweep>/.submitit/<job id>/`
    holding a pickled job (array tasks read `<array id>_<index>`; the array's own folder holds only
    the sbatch script)."""
    folders = (sweep_dir / ".submitit").glob("*")
    return sorted(p.name for p in folders if re.fullmatch(r"\d+(_\d+)?", p.name) and (p / f"{p.name}_submitted.pkl").is_file())


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job <id>` as a dict (finished jobs stay listed for MinJobAge, 30 min on the test cluster)."""
    out = _command(["scontrol", "show", "job", "-o", job_id])
    assert out.returncode == 0, f"scontrol show job {job_id}: {out.stderr.strip()}"
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def finished_job(job_id: str, timeout: float = 120) -> dict[str, str]:
    """``scontrol_job`` once SLURM has closed the job: submitit writes a job's result before its
    process, the srun step and the batch script have exited, so the launcher can return first."""
    def closed():
        record = scontrol_job(job_id)
        return None if record["JobState"] in ("PENDING", "RUNNING", "COMPLETING") else record

    return wait_for(closed, timeout, f"SLURM to close job {job_id}")


def submitit_logs(sweep_dir: Path, job_id: str) -> str:
    """Everything the job printed (stdout then stderr of task 0), across restarts: submitit opens
    its logs in append mode."""
    folder = sweep_dir / ".submitit" / job_id
    return "".join(path.read_text(errors="replace") for path in sorted(folder.glob(f"{job_id}_0_log.*"), reverse=True))


def wait_for(condition, timeout: float, what: str, launched: Launched | None = None, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy (returned); fail after ``timeout`` or when
    ``launched`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if launched is not None and launched.proc.poll() is not None:
            raise AssertionError(
                f"{launched.what} exited (code {launched.proc.returncode}) before {what}:\n{launched.output()}"
            )
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{queue()}")
