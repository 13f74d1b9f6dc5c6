"""``status.json`` in a job's run directory: whether the job is running, completed or failed.

A Hydra multirun keeps going when one job raises (the basic launcher runs the whole batch and
fails at the end; submitit runs every job), so a sweep's outcome has to be read job by job:
``python -m advmed.collect`` does so from these records. Entry points wrap their ``main``::

    @hydra.main(version_base="1.3", config_path="../conf", config_name="train")
    @record_job_status
    def main(cfg): ...

The record is written atomically at start (``running``: start time, host, pid, SLURM ids, the
overrides) and replaced at the end (``completed`` with the returned value, or ``failed`` with
the error's one-line message and the traceback's tail). A job killed without warning (kill -9,
OOM killer, time limit) leaves ``running``: no end record. A requeued or resumed job that starts
again overwrites the record and counts the attempt. Neither Hydra nor Lightning keeps such a
per-job record on disk (Hydra's ``JobReturn`` lives only in the launching process), hence this module.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from advmed.utils.files import write_json

STATUS_FILE = "status.json"
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"

# Environment variables that say which process of a distributed job this is; only rank 0 writes.
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
_SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                    "SLURM_JOB_PARTITION", "SLURMD_NODENAME")
_MAX_ERROR_CHARS = 500
_TRACEBACK_LINES = 60

T = TypeVar("T")
log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_rank_zero() -> bool:
    """True unless a rank variable (torchrun, Lightning's launcher, SLURM tasks) names another process:
    DDP runs ``main`` once per process, and only one of them may own the record."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


def error_line(error: BaseException) -> str:
    """``Type: message`` on one line. The message's lines are joined rather than cut at the first,
    because wrappers put the cause on the next line (Hydra's ``instantiate``: "Error in call to target
    'advmed.attacks.fgsm.FGSM':" then "ValueError('eps must be in [0, 1] ..., got 1.5')")."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    line = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return line if len(line) <= _MAX_ERROR_CHARS else line[: _MAX_ERROR_CHARS - 3] + "..."


def _jsonable(value: Any) -> Any:
    """The returned metric as JSON: numbers (tensors included) as floats (nan/inf as strings), containers
    as plain containers, anything else as its repr."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of ``run_dir`` (None when the job never wrote one)."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it if the job is not running") from e
    if not isinstance(record, dict) or record.get("status") not in (RUNNING, COMPLETED, FAILED):
        raise ValueError(f"{path} holds no job status (expected a 'status' of {RUNNING}, {COMPLETED} or {FAILED})")
    return record


@dataclass
class JobStatusRecord:
    """What :func:`job_status` yields: set ``result`` to what the job returns (recorded on completion)."""

    path: Path
    result: Any = None


def _start_record(run_dir: Path, overrides: list[str], job: dict[str, Any]) -> dict[str, Any]:
    previous = None
    try:
        previous = read_status(run_dir)
    except ValueError:
        pass  # a broken record of an earlier attempt is replaced, not a reason to fail this one
    slurm = {name.lower(): os.environ[name] for name in _SLURM_VARIABLES if name in os.environ}
    return {
        "status": RUNNING,
        "started": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm": slurm,
        "overrides": list(overrides),
        "attempt": int(previous.get("attempt", 1)) + 1 if previous else 1,
        "previous_status": previous.get("status") if previous else None,
        **job,
    }


@contextmanager
def job_status(run_dir: str | Path, overrides: list[str] | None = None,
               job: dict[str, Any] | None = None) -> Iterator[JobStatusRecord]:
    """Record the outcome of the ``with`` block in ``run_dir/status.json`` (see the module docstring).

    ``overrides`` are the job's command-line overrides and ``job`` any extra fields (Hydra's job
    number and id). Exceptions are recorded and re-raised, so the process still fails. Processes
    other than rank 0 of a distributed job run the block without writing anything.
    """
    run_dir = Path(run_dir)
    handle = JobStatusRecord(run_dir / STATUS_FILE)
    if not is_rank_zero():
        yield handle
        return
    record = _start_record(run_dir, overrides or [], job or {})
    write_json(handle.path, record)
    try:
        yield handle
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            write_json(handle.path, {**record, "status": COMPLETED, "ended": _now(), "result": None})
            raise
        tail = "".join(traceback.format_exception(e)).splitlines()[-_TRACEBACK_LINES:]
        failed = {**record, "status": FAILED, "ended": _now(), "error": error_line(e),
                  "error_type": type(e).__name__, "traceback": tail}
        try:
            write_json(handle.path, failed)
        except OSError as write_error:  # the job's own error matters more than a lost record
            log.warning("could not write %s: %s", handle.path, write_error)
        raise
    write_json(handle.path, {**record, "status": COMPLETED, "ended": _now(), "result": _jsonable(handle.result)})


def _hydra_job(cfg: DictConfig) -> tuple[Path, list[str], dict[str, Any]]:
    """Run directory, overrides and job number/id of the Hydra job running ``cfg``."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    run_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if run_dir is None and hydra_cfg is not None:
        run_dir = hydra_cfg.runtime.output_dir
    if run_dir is None:
        raise ValueError("record_job_status needs the run directory: the config has no paths.output_dir "
                         "and no Hydra job is running (decorate a @hydra.main task function)")
    if hydra_cfg is None:
        return Path(run_dir), [], {}
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    job = {key: OmegaConf.select(hydra_cfg, f"job.{key}", default=None, throw_on_missing=False)
           for key in ("name", "num", "id")}
    return Path(run_dir), overrides, {f"hydra_job_{k}": v for k, v in job.items() if v is not None}


def record_job_status(main: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Decorate a Hydra task function (under ``@hydra.main``) so that each job writes ``status.json``."""

    @functools.wraps(main)
    def wrapped(cfg: DictConfig) -> T:
        run_dir, overrides, job = _hydra_job(cfg)
        with job_status(run_dir, overrides, job) as status:
            status.result = main(cfg)
        return status.result

    return wrapped
