"""SNAP: one table (CSV + markdown + PNG) of a sweep over a patch setting, and the headline metrics.

Collects the jobs of a multirun such as
``python -m advmed.evaluate -m experiment=snap/synthetic_resnet50 ckpt_path=... attack.area_fraction=0.02,0.05,0.1``
(each job directory holds ``.hydra/overrides.yaml`` and the ``metrics.json`` it wrote) into
``<key>_sweep.csv`` / ``.md`` and ``accuracy_vs_<key>.png``; with ``--headline`` the metrics of the
job at that value are copied to ``<output dir>/metrics.json`` (as ``make paper-snap`` does):

    python experiments/snap/aggregate.py <sweep dir>
    python experiments/snap/aggregate.py <sweep dir> --key attack.num_blobs --output-dir results/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure

from advmed.studies.sweeps import find_jobs, job_override, sort_key
from advmed.utils.files import atomic_write, write_json, write_text
from advmed.utils.loggers import markdown_table
from advmed.utils.tables import Table, write_csv

DEFAULT_KEY = "attack.area_fraction"
COLUMNS = ["test/acc", "test/adv_acc", "test/attack_success_rate", "test/area_fraction", "test/steps"]


def collect(sweep_dir: Path, key: str) -> list[tuple[str, Path, dict]]:
    """``(value, job dir, metrics.json record)`` per finished job, in the swept order."""
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra multirun jobs (<job>/.hydra/overrides.yaml) under '{sweep_dir}'")
    found = []
    for job in sorted(jobs, key=lambda j: sort_key(job_override(j, key))):
        path = job / "metrics.json"
        if not path.is_file():
            print(f"skipping {job}: no metrics.json (failed or still running)", file=sys.stderr)
            continue
        found.append((job_override(job, key), job, json.loads(path.read_text())))
    if not found:
        raise FileNotFoundError(f"none of the {len(jobs)} jobs under '{sweep_dir}' has a metrics.json")
    return found


def aggregate(sweep_dir: str | Path, key: str = DEFAULT_KEY, output_dir: str | Path | None = None,
              headline: str | None = None) -> list[Path]:
    """Write the sweep table (CSV, markdown), its plot and, with ``headline``, ``metrics.json``."""
    sweep_dir = Path(sweep_dir)
    output_dir = Path(output_dir) if output_dir is not None else sweep_dir
    jobs = collect(sweep_dir, key)
    name = key.rsplit(".", 1)[-1]
    columns = [name, *COLUMNS, "job"]
    rows = [[value, *(float(record["metrics"].get(c, float("nan"))) for c in COLUMNS), str(job.relative_to(sweep_dir))]
            for value, job, record in jobs]
    written = [write_csv(output_dir / f"{name}_sweep.csv", Table(columns, rows)),
               write_text(output_dir / f"{name}_sweep.md", markdown_table(columns, rows)),
               _plot(rows, name, output_dir / f"accuracy_vs_{name}.png")]
    if headline is not None:
        chosen = [(value, job, record) for value, job, record in jobs if sort_key(value) == sort_key(headline)]
        if not chosen:
            raise ValueError(f"--headline {headline}: no job of the sweep has {key}={headline} (values: {[v for v, _, _ in jobs]})")
        value, job, record = chosen[0]
        written.append(write_json(output_dir / "metrics.json", {**record, "sweep": str(sweep_dir), "headline": {key: value},
                                                               "job": str(job)}))
    return written


def _plot(rows: list[list], name: str, path: Path) -> Path:
    x = [float(r[0]) for r in rows]
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    ax.plot(x, [100 * r[1] for r in rows], marker="o", label="clean accuracy")
    ax.plot(x, [100 * r[2] for r in rows], marker="o", label="accuracy under SNAP")
    ax.plot(x, [100 * r[3] for r in rows], marker="s", linestyle="--", label="targeted success rate")
    ax.set_xlabel(name.replace("_", " "))
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"SNAP: accuracy vs {name.replace('_', ' ')}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (holds one subdirectory per job)")
    parser.add_argument("--key", default=DEFAULT_KEY, help=f"the swept config key (default {DEFAULT_KEY})")
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default: sweep_dir)")
    parser.add_argument("--headline", default=None, help="copy this job's metrics to <output dir>/metrics.json")
    args = parser.parse_args(argv)
    for path in aggregate(args.sweep_dir, args.key, args.output_dir, args.headline):
        print(f"wrote {path}")
    table = args.sweep_dir / f"{args.key.rsplit('.', 1)[-1]}_sweep.md" if args.output_dir is None else \
        args.output_dir / f"{args.key.rsplit('.', 1)[-1]}_sweep.md"
    print(table.read_text())


if __name__ == "__main__":
    main()
