"""One table of a Hydra multirun: every job's overrides, status and final metrics.

Reads what the entry points leave in each job directory: ``.hydra/overrides.yaml`` (the job's
overrides), ``status.json`` (advmed/utils/job_status.py), ``metrics.json`` (``advmed.train`` and
``advmed.evaluate``: ``{"metrics": {...}, ...}``) or ``summary.json`` (``advmed.study``: success
rate per eps). A job that died without an end record (kill -9, out of memory, time limit) is
explained, where possible, by the last error line of its submitit log
(``<sweep>/.submitit/<job id>/<job id>_<task>_log.err``, the layout of conf/hydra/launcher/*.yaml).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from advmed.studies.card.summary import card_metrics
from advmed.studies.sweeps import find_jobs, sort_key
from advmed.utils.files import write_text
from advmed.utils.job_status import COMPLETED, FAILED, RUNNING, read_status
from advmed.utils.loggers import markdown_table
from advmed.utils.tables import Table, write_csv

NO_END_RECORD = "running-or-killed"
_LOG_TAIL_BYTES = 64 * 1024
_TRACEBACK = "Traceback (most recent call last):"
# What SLURM, the kernel or the shell write when they end a job: slurmstepd's "error: Detected 1
# oom_kill event", "*** JOB 12 CANCELLED AT ... DUE TO TIME LIMIT ***", "Killed", a crash signal.
_KILL_LINE = re.compile(r"slurmstepd|srun: error|\bKilled\b|oom[-_ ]kill|out of memory|CANCELLED|"
                        r"Segmentation fault|Bus error", re.IGNORECASE)


@dataclass
class JobRow:
    """One job of a sweep as read from its directory."""

    name: str  # the job directory relative to the sweep directory
    overrides: dict[str, str]
    status: str  # completed / failed / running-or-killed
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # the error line (status.json, or the submitit log of a job with no end record)


def parse_overrides(job_dir: Path) -> dict[str, str]:
    """``{key: value}`` of ``.hydra/overrides.yaml`` (``+key``/``++key`` count as ``key``; ``~key``
    deletions keep their ``~``)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path} should be a list of overrides such as 'attack.eps=0.02', got {type(entries).__name__}")
    overrides = {}
    for entry in entries:
        key, _, value = str(entry).partition("=")
        overrides[key.lstrip("+")] = value
    return overrides


def read_metrics(job_dir: Path) -> dict[str, float]:
    """Final metrics of a job: a robustness card's summary (``card.json``, as ``card/...`` keys),
    ``metrics.json``'s ``metrics``, else the study's success rates from ``summary.json`` under the
    keys ``advmed.study`` returns (``study/success_rate/eps=<eps>``)."""
    metrics_file, summary_file = job_dir / "metrics.json", job_dir / "summary.json"
    if (job_dir / "card.json").is_file():
        metrics = card_metrics(_load_json(job_dir / "card.json"))
    elif metrics_file.is_file():
        metrics = _load_json(metrics_file).get("metrics") or {}
    elif summary_file.is_file():
        rates = _load_json(summary_file).get("success_rate") or {}
        metrics = {f"study/success_rate/eps={eps}": rate for eps, rate in rates.items()}
    else:
        return {}
    return {str(k): float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _load_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): was it written by an advmed entry point?") from e
    if not isinstance(record, dict):
        raise ValueError(f"{path} should hold a JSON object, got {type(record).__name__}")
    return record


def _hydra_job_id(job_dir: Path, record: dict | None) -> str | None:
    """The job's id as its launcher named it (submitit: the SLURM or local job id)."""
    if record and record.get("hydra_job_id") is not None:
        return str(record["hydra_job_id"])
    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return None
    job = ((yaml.safe_load(hydra_file.read_text()) or {}).get("hydra") or {}).get("job") or {}
    return None if job.get("id") in (None, "???") else str(job["id"])


def last_error_line(log_file: Path) -> str | None:
    """The last line of a log that says why the job ended: the exception line of its last Python
    traceback (the first unindented line after the header), or a later line of SLURM, the kernel
    or the shell that ended it (out of memory, time limit, kill)."""
    with log_file.open("rb") as f:
        f.seek(max(0, log_file.stat().st_size - _LOG_TAIL_BYTES))
        lines = [line.rstrip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    found, exception_at = None, -1
    for i, line in enumerate(lines):
        if line.startswith(_TRACEBACK):
            exception_at = next((j for j in range(i + 1, len(lines)) if not lines[j][0].isspace()), -1)
            found = lines[exception_at] if exception_at >= 0 else found
    kills = [line for line in lines[exception_at + 1:] if not line[0].isspace() and _KILL_LINE.search(line)]
    if kills:
        return kills[-1].strip()
    return found.strip() if found else None


def submitit_error(sweep_dir: Path, job_dir: Path, record: dict | None) -> str | None:
    """The last error line of the job's submitit logs, if the sweep kept any."""
    job_id = _hydra_job_id(job_dir, record)
    if job_id is None or not (sweep_dir / ".submitit").is_dir():
        return None
    for log_file in sorted((sweep_dir / ".submitit" / job_id).glob(f"{job_id}_*_log.err"), reverse=True):
        line = last_error_line(log_file)
        if line:
            return line
    return None


def read_job(sweep_dir: Path, job_dir: Path) -> JobRow:
    """The row of one job directory."""
    record = read_status(job_dir)
    metrics = read_metrics(job_dir)
    if record is not None:
        status = {RUNNING: NO_END_RECORD, COMPLETED: COMPLETED, FAILED: FAILED}[record["status"]]
    else:  # written before status records existed, or died before its first line
        status = COMPLETED if metrics else NO_END_RECORD
    error = record.get("error") if record and status == FAILED else None
    if status == NO_END_RECORD:
        error = submitit_error(sweep_dir, job_dir, record)
    name = job_dir.relative_to(sweep_dir).as_posix() if job_dir != sweep_dir else job_dir.name
    return JobRow(name, parse_overrides(job_dir), status, metrics, error)


def read_sweep(sweep_dir: str | Path) -> list[JobRow]:
    """Every job of the multirun in ``sweep_dir``; clear errors for a missing or empty directory."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        what = "does not exist" if not sweep_dir.exists() else "is not a directory"
        raise NotADirectoryError(f"'{sweep_dir}' {what}: give a multirun directory, e.g. outputs/train/multiruns/<time>")
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(
            f"no jobs under '{sweep_dir}': looked for job directories holding .hydra/overrides.yaml "
            "(a multirun directory, e.g. outputs/train/multiruns/<time>, holds one per job)"
        )
    return [read_job(sweep_dir, job) for job in jobs]


def metric_order(key: str) -> tuple[int, str]:
    """``test/*`` first, then the rest, each alphabetically."""
    return (0 if key.startswith("test/") else 1, key)


@dataclass
class SweepTable:
    """The jobs of a sweep with the override keys split into swept and constant ones."""

    jobs: list[JobRow]
    swept: list[str]  # keys whose value differs between jobs (or that some jobs lack)
    constant: dict[str, str]  # keys every job gives the same value
    metrics: list[str]  # union of the jobs' metric keys, test/* first

    @classmethod
    def from_jobs(cls, jobs: list[JobRow]) -> SweepTable:
        keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
        values = {k: {job.overrides.get(k) for job in jobs} for k in keys}
        swept = [k for k in keys if len(values[k]) > 1]
        constant = {k: next(iter(values[k])) for k in keys if k not in swept}
        metrics = sorted({k for job in jobs for k in job.metrics}, key=metric_order)
        ordered = sorted(jobs, key=lambda job: ([sort_key(job.overrides.get(k, "")) for k in swept], job.name))
        return cls(ordered, swept, constant, metrics)

    def csv_table(self) -> Table:
        """All override keys (swept first), status, error line and every metric; blank where a job has none."""
        keys = [*self.swept, *self.constant]
        rows = [[job.name, *(job.overrides.get(k, "") for k in keys), job.status, job.error or "",
                 *(job.metrics.get(m, "") for m in self.metrics)] for job in self.jobs]
        return Table(["job", *keys, "status", "error", *self.metrics], rows)

    def markdown(self, title: str) -> str:
        """The table of swept keys, status and metrics; constant overrides above it, failed and
        unfinished jobs with their error lines below it."""
        counts = Counter(job.status for job in self.jobs)
        lines = [f"# {title}", "",
                 f"- jobs: {len(self.jobs)} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"]
        if self.constant:
            lines.append("- same in every job: " + ", ".join(f"`{k}={v}`" for k, v in self.constant.items()))
        rows = [[job.name, *(job.overrides.get(k, "") for k in self.swept), job.status,
                 *(job.metrics.get(m, "") for m in self.metrics)] for job in self.jobs]
        lines += ["", markdown_table(["job", *self.swept, "status", *self.metrics], rows)]
        failed = [job for job in self.jobs if job.status == FAILED]
        if failed:
            lines += ["## Failed jobs", ""] + [f"- `{job.name}`: {job.error or '(no error recorded)'}" for job in failed]
            lines.append("")
        unfinished = [job for job in self.jobs if job.status == NO_END_RECORD]
        if unfinished:
            lines += ["## Jobs with no end record", "",
                      "Still running, or killed without warning (kill -9, out of memory, time limit):", ""]
            lines += [f"- `{job.name}`" + (f": last error in its submitit log: {job.error}" if job.error else "")
                      for job in unfinished]
            lines.append("")
        return "\n".join(lines)


def write_sweep_table(table: SweepTable, output_dir: Path, title: str) -> tuple[Path, Path]:
    """Write ``collect.csv`` and ``collect.md`` into ``output_dir`` (atomically); return their paths."""
    csv_path = write_csv(output_dir / "collect.csv", table.csv_table())
    md_path = write_text(output_dir / "collect.md", table.markdown(title))
    return csv_path, md_path
