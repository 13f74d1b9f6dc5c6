"""PGD study, Fig. 3d: attack success vs eps for each training-set size.

Collects the jobs of a multirun such as
``python -m advmed.train -m experiment=pgd_study/train_size`` -- each job directory holds
``.hydra/overrides.yaml`` (what the job swept) and the ``eps_sweep.csv`` its study wrote --
into one table ``train_size.csv`` and the plot ``fig3d_success_vs_train_size.png``. Jobs whose
study ran APGD-CE beside PGD (``study.apgd``, an ``apgd_success_rate`` column) add
``apgd_n_fooled`` / ``apgd_success_rate`` columns (blank for jobs without them, e.g. older runs)
and a dashed line per training-set size; when no job has them, the table and plot are PGD's only:

    python experiments/pgd_study/aggregate.py outputs/train/multiruns/<time>
    python experiments/pgd_study/aggregate.py <sweep dir> --key data.train_fraction --output-dir results/
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from advmed.studies.pgd_study_figures import plot_success_vs_eps
from advmed.studies.sweeps import find_jobs, job_override, sort_key
from advmed.utils.tables import Table, write_csv

DEFAULT_KEY = "data.train_fraction"


def _iterations(eps_sweep_csv: Path) -> int | None:
    """``max_iter`` of the study that wrote ``eps_sweep_csv`` (its ``summary.json``), None when unknown."""
    try:
        return int(json.loads((eps_sweep_csv.parent / "summary.json").read_text())["settings"]["max_iter"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def aggregate(sweep_dir: str | Path, key: str = DEFAULT_KEY, output_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``train_size.csv`` and the Fig. 3d PNG into ``output_dir`` (default: the sweep
    directory); return their paths. Jobs without an ``eps_sweep.csv`` (failed or still
    running) are reported on stderr and left out; jobs without APGD columns add no APGD values."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra multirun jobs (<job>/.hydra/overrides.yaml) under '{sweep_dir}'")
    column = key.rsplit(".", 1)[-1]
    rows, series, styles, iterations = [], {}, {}, set()
    n_lines = 0  # one colour per job: its PGD line solid, its APGD-CE line dashed
    for job in sorted(jobs, key=lambda j: sort_key(job_override(j, key))):
        value = job_override(job, key)
        found = sorted(job.rglob("eps_sweep.csv"))
        if len(found) != 1:
            print(f"skipping {job}: expected one eps_sweep.csv, found {len(found)}", file=sys.stderr)
            continue
        with found[0].open(newline="") as f:
            sweep = list(csv.DictReader(f))
        iterations.add(_iterations(found[0]))
        color, n_lines = f"C{n_lines % 10}", n_lines + 1
        eps = [float(r["eps"]) for r in sweep]
        series[value] = (eps, [float(r["success_rate"]) for r in sweep])
        styles[value] = {"color": color}
        has_apgd = bool(sweep) and "apgd_success_rate" in sweep[0]
        if has_apgd:  # a leading "_" keeps the dashed twin out of the legend (its title explains it)
            series[f"_{value} APGD-CE"] = (eps, [float(r["apgd_success_rate"]) for r in sweep])
            styles[f"_{value} APGD-CE"] = {"color": color, "linestyle": "--", "marker": "s", "fillstyle": "none"}
        rows += [[value, float(r["eps"]), int(r["n_eligible"]), int(r["n_fooled"]), float(r["success_rate"]),
                  int(r["apgd_n_fooled"]) if has_apgd else None, float(r["apgd_success_rate"]) if has_apgd else None,
                  str(job.relative_to(sweep_dir))] for r in sweep]
    if not rows:
        raise FileNotFoundError(f"none of the {len(jobs)} jobs under '{sweep_dir}' has an eps_sweep.csv")
    columns = [column, "eps", "n_eligible", "n_fooled", "success_rate", "apgd_n_fooled", "apgd_success_rate", "job"]
    any_apgd = any(row[6] is not None for row in rows)
    if not any_apgd:  # no job ran APGD: PGD's table as before
        columns, rows = columns[:5] + columns[7:], [row[:5] + row[7:] for row in rows]
    else:  # blank cells where a job has no APGD rate
        rows = [["" if v is None else v for v in row] for row in rows]
    output_dir = Path(output_dir) if output_dir is not None else sweep_dir
    table = write_csv(output_dir / "train_size.csv", Table(columns, rows))
    k = iterations.pop() if len(iterations) == 1 else None  # named only when every job agrees
    pgd, apgd = (f"PGD-{k}", f"APGD-CE-{k}") if k else ("PGD", "APGD-CE")
    title = f"Attack success vs training-set size (L-inf, {pgd}{f' and {apgd}' if any_apgd else ''})"
    legend_title = f"{column} (solid: {pgd}, dashed: {apgd})" if any_apgd else column
    figure = plot_success_vs_eps(series, output_dir / "fig3d_success_vs_train_size.png", title,
                                 legend_title=legend_title, styles=styles)
    return table, figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (holds one subdirectory per job)")
    parser.add_argument("--key", default=DEFAULT_KEY, help=f"the swept config key (default {DEFAULT_KEY})")
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default: sweep_dir)")
    args = parser.parse_args(argv)
    table, figure = aggregate(args.sweep_dir, args.key, args.output_dir)
    print(f"wrote {table} and {figure}")


if __name__ == "__main__":
    main()
