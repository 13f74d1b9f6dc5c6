"""Collect a Hydra multirun into one table: every job's overrides, status and final metrics.

    python -m advmed.collect outputs/train/multiruns/<time>
    python -m advmed.collect <multirun dir> --metric test/adv_acc --x attack.eps
    python -m advmed.collect <multirun dir> --output-dir results/
    python -m advmed.collect <multirun dir of seed=0,1,2 x attack.eps=...>   # + mean ± sd over the seeds

Writes ``collect.csv`` and ``collect.md`` into the multirun directory (or ``--output-dir``) and
prints the markdown. A job is ``completed``, ``failed`` (its error line is listed under the table)
or ``running-or-killed`` (no end record: still running, or killed by kill -9, out of memory or a
time limit; the last error line of its submitit log is listed when there is one). With
``--metric`` and ``--x`` it also plots the metric against that override, one line per value of
the other swept overrides. When the jobs sweep ``seed`` (or the key of ``--over``) it also writes
``collect_over_seed.csv`` / ``.md``: the jobs grouped by every other swept override, each metric as
mean ± sd over the group (advmed/studies/seed_spread.py). Works for the multiruns of
``advmed.train``, ``advmed.evaluate`` and ``advmed.study``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from advmed.studies.seed_spread import SeedSpread, write_seed_spread
from advmed.studies.sweep_plot import Series, metric_series, plot_metric
from advmed.studies.sweep_table import SweepTable, read_sweep, write_sweep_table


@dataclass
class CollectResult:
    """What :func:`collect` wrote, and the plotted data (``None`` without ``--metric``)."""

    table: SweepTable
    csv: Path
    markdown: Path
    plot: Path | None = None
    series: Series | None = None
    spread: SeedSpread | None = None  # mean ± sd over `over` (seed), when the jobs sweep it
    spread_files: tuple[Path, Path] | None = None


def plot_name(metric: str, x_key: str) -> str:
    """``test/adv_acc``, ``attack.eps`` -> ``test_adv_acc_vs_attack.eps.png``."""
    return re.sub(r"[^\w.=-]", "_", f"{metric}_vs_{x_key}") + ".png"


def _check_plot_keys(table: SweepTable, metric: str | None, x_key: str | None) -> None:
    if (metric is None) != (x_key is None):
        raise ValueError("--metric and --x go together: give both (e.g. --metric test/adv_acc --x attack.eps) or neither")
    if metric is None:
        return
    if metric not in table.metrics:
        available = ", ".join(table.metrics) or "none (no job has finished with metrics)"
        raise ValueError(f"unknown metric '{metric}': the jobs report {available}")
    keys = [*table.swept, *table.constant]
    if x_key not in keys:
        raise ValueError(f"unknown override '{x_key}': the jobs override {', '.join(keys) or 'nothing'}")


def collect(sweep_dir: str | Path, metric: str | None = None, x_key: str | None = None,
            output_dir: str | Path | None = None, over: str | None = None) -> CollectResult:
    """Write the table (and with ``metric`` and ``x_key`` the plot) of the multirun in ``sweep_dir``;
    with ``over`` (default: ``seed`` when the jobs sweep it) also the mean ± sd over that key."""
    sweep_dir = Path(sweep_dir)
    table = SweepTable.from_jobs(read_sweep(sweep_dir))
    _check_plot_keys(table, metric, x_key)  # before writing anything: a typo leaves no half result
    if over is None and "seed" in table.swept:
        over = "seed"
    spread = SeedSpread.from_table(table, over) if over is not None else None  # refuses a key not swept
    output_dir = Path(output_dir) if output_dir is not None else sweep_dir
    csv_path, md_path = write_sweep_table(table, output_dir, f"Sweep {sweep_dir.resolve().name}")
    result = CollectResult(table, csv_path, md_path, spread=spread)
    if spread is not None:
        result.spread_files = write_seed_spread(spread, output_dir, f"Sweep {sweep_dir.resolve().name} over {over}")
    if metric is not None:
        groups = [k for k in table.swept if k != x_key]
        result.series = metric_series(table.jobs, metric, x_key, groups)
        missing = sum(metric not in job.metrics for job in table.jobs)
        result.plot = plot_metric(result.series, output_dir / plot_name(metric, x_key), metric, x_key, missing)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m advmed.collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (one subdirectory per job)")
    parser.add_argument("--metric", default=None, help="metric to plot, e.g. test/adv_acc (needs --x)")
    parser.add_argument("--x", dest="x_key", default=None, help="override to plot it against, e.g. attack.eps")
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default: the multirun directory)")
    parser.add_argument("--over", default=None,
                        help="also report mean ± sd over this swept override (default: seed, when the jobs sweep it)")
    args = parser.parse_args(argv)
    try:
        result = collect(args.sweep_dir, args.metric, args.x_key, args.output_dir, args.over)
    except (ValueError, OSError) as e:
        parser.error(str(e))
    print(result.markdown.read_text())
    if result.spread_files:
        print(result.spread_files[1].read_text())
    written = [result.csv, result.markdown, *(result.spread_files or ()), *([result.plot] if result.plot else [])]
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
