"""Seed spread of a sweep: its jobs grouped by every override except one (``seed`` by default),
each metric as mean ± sample standard deviation over the group, with the number of jobs.

How much a figure moves with the seed is part of the figure: a table of one seed per setting
cannot tell a difference between two settings from the noise of one. Only completed jobs count;
a group lists how many it has, so a setting with a failed seed shows ``n`` = 2, not a silent mean.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from advmed.studies.sweep_table import JobRow, SweepTable
from advmed.studies.sweeps import sort_key
from advmed.utils.files import write_text
from advmed.utils.job_status import COMPLETED
from advmed.utils.loggers import markdown_table
from advmed.utils.tables import Table, write_csv


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (NaN for one value) and count of one metric in one group."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return cls(math.nan, math.nan, 0)
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        return cls(statistics.fmean(values), sd, len(values))

    def text(self, digits: int = 4) -> str:
        """``0.8123 ± 0.0102``; ``0.8123 (1 seed)`` when one value; blank when none."""
        if self.n == 0:
            return ""
        if self.n == 1:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


@dataclass
class SeedSpread:
    """One row per group of completed jobs that differ only in ``over``."""

    over: str
    keys: list[str]  # the swept overrides that define a group
    groups: list[tuple[tuple[str, ...], list[JobRow]]]
    metrics: list[str]

    @classmethod
    def from_table(cls, table: SweepTable, over: str = "seed") -> SeedSpread:
        if over not in table.swept:
            swept = ", ".join(table.swept) or "nothing"
            raise ValueError(f"the jobs do not sweep '{over}' (they sweep {swept}): run a multirun with {over}=0,1,2")
        keys = [k for k in table.swept if k != over]
        groups: dict[tuple[str, ...], list[JobRow]] = {}
        for job in table.jobs:
            if job.status == COMPLETED:
                groups.setdefault(tuple(job.overrides.get(k, "") for k in keys), []).append(job)
        ordered = sorted(groups.items(), key=lambda item: [sort_key(v) for v in item[0]])
        return cls(over, keys, ordered, table.metrics)

    def spread(self, jobs: list[JobRow], metric: str) -> Spread:
        return Spread.of([float(job.metrics[metric]) for job in jobs if metric in job.metrics])

    def csv_table(self) -> Table:
        """Group keys, n and, per metric, ``<metric>_mean`` and ``<metric>_sd``; then the seeds of each group."""
        columns = [*self.keys, "n", self.over, *(f"{m}_{s}" for m in self.metrics for s in ("mean", "sd"))]
        rows = []
        for values, jobs in self.groups:
            spreads = [self.spread(jobs, m) for m in self.metrics]
            seeds = " ".join(sorted((job.overrides.get(self.over, "") for job in jobs), key=sort_key))
            rows.append([*values, len(jobs), seeds, *(v for s in spreads for v in (s.mean, s.sd))])
        return Table(columns, rows)

    def markdown(self, title: str) -> str:
        rows = [[*values, len(jobs), *(self.spread(jobs, m).text() for m in self.metrics)] for values, jobs in self.groups]
        return "\n".join([
            f"# {title}", "",
            f"Mean ± sample standard deviation over `{self.over}`, completed jobs only (n per row).", "",
            markdown_table([*self.keys, "n", *self.metrics], rows), "",
        ])


def write_seed_spread(spread: SeedSpread, output_dir: Path, title: str) -> tuple[Path, Path]:
    """Write ``collect_over_<over>.csv`` / ``.md`` into ``output_dir`` (atomically); return their paths."""
    stem = f"collect_over_{spread.over}"
    csv_path = write_csv(output_dir / f"{stem}.csv", spread.csv_table())
    md_path = write_text(output_dir / f"{stem}.md", spread.markdown(title))
    return csv_path, md_path
