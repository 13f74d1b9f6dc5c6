"""PGD study, Fig. 3d: attack success vs eps for each training-set size.

Collects the jobs of a multirun such as
``python -m advmed.train -m experiment=pgd_study/train_size`` -- each job directory holds
``.hydra/overrides.yaml`` (what the job swept) and the ``eps_sweep.csv`` its study wrote --
into one table ``train_size.csv`` and the plot ``fig3d_success_vs_train_size.png``:

    python experiments/pgd_study/aggregate.py outputs/train/multiruns/<time>
    python experiments/pgd_study/aggregate.py <sweep dir> --key data.train_fraction --output-dir results/
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from advmed.studies.pgd_study_figures import plot_success_vs_eps
from advmed.studies.sweeps import find_jobs, job_override, sort_key
from advmed.utils.tables import Table, write_csv

DEFAULT_KEY = "data.train_fraction"


def aggregate(sweep_dir: str | Path, key: str = DEFAULT_KEY, output_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``train_size.csv`` and the Fig. 3d PNG into ``output_dir`` (default: the sweep
    directory); return their paths. Jobs without an ``eps_sweep.csv`` (failed or still
    running) are reported on stderr and left out."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra multirun jobs (<job>/.hydra/overrides.yaml) under '{sweep_dir}'")
    column = key.rsplit(".", 1)[-1]
    rows, series = [], {}
    for job in sorted(jobs, key=lambda j: sort_key(job_override(j, key))):
        value = job_override(job, key)
        found = sorted(job.rglob("eps_sweep.csv"))
        if len(found) != 1:
            print(f"skipping {job}: expected one eps_sweep.csv, found {len(found)}", file=sys.stderr)
            continue
        with found[0].open(newline="") as f:
            sweep = list(csv.DictReader(f))
        eps = [float(r["eps"]) for r in sweep]
        rate = [float(r["success_rate"]) for r in sweep]
        series[value] = (eps, rate)
        rows += [[value, float(r["eps"]), int(r["n_eligible"]), int(r["n_fooled"]), float(r["success_rate"]),
                  str(job.relative_to(sweep_dir))] for r in sweep]
    if not rows:
        raise FileNotFoundError(f"none of the {len(jobs)} jobs under '{sweep_dir}' has an eps_sweep.csv")
    output_dir = Path(output_dir) if output_dir is not None else sweep_dir
    table = write_csv(output_dir / "train_size.csv",
                      Table([column, "eps", "n_eligible", "n_fooled", "success_rate", "job"], rows))
    figure = plot_success_vs_eps(series, output_dir / "fig3d_success_vs_train_size.png",
                                 "Attack success vs training-set size", legend_title=column)
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
