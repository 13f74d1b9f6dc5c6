"""A paper's tables over seeds: ``make paper-<name> SEEDS=0,1,2`` runs the pipeline once per seed into
``<output dir>/seed_<s>/`` and then calls this, which writes beside them, per table of the paper
(:data:`advmed.studies.papers.tables.PAPERS`):

- ``<table>_over_seeds.csv``: the key columns, ``n`` (seeds with a value), ``seeds``, and per
  measurement ``<column>_mean`` and ``<column>_sd`` (sample standard deviation; NaN for one seed);
- ``<table>_over_seeds.md``: the same as mean ± sd;
- ``<table>_per_seed.csv``: every seed's rows, with a ``seed`` column first.

A row is matched across seeds by its key columns; a row missing from a seed's table counts as
missing (``n`` says so), never as zero. The spread is what tells a difference between two settings
from the noise of one run: at CPU scale a column can move by tens of points between seeds.

    python -m advmed.studies.papers.over_seeds snap outputs/paper_snap --seeds 0,1,2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from advmed.studies.papers.tables import (
    PaperTable,
    format_key,
    format_value,
    measurement_columns,
    paper,
    read_table,
)
from advmed.studies.seed_spread import Spread
from advmed.utils.files import write_text
from advmed.utils.loggers import markdown_table
from advmed.utils.tables import Table, write_csv


def parse_seeds(text: str) -> list[str]:
    """``"0,1,2"`` -> ``["0", "1", "2"]``; refuses empty and repeated seeds."""
    seeds = [s.strip() for s in str(text).replace(" ", ",").split(",") if s.strip()]
    if not seeds:
        raise ValueError(f"no seeds in '{text}': give them as SEEDS=0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed is repeated in '{text}': each seed runs once")
    bad = [s for s in seeds if not s.lstrip("-").isdigit()]
    if bad:
        raise ValueError(f"seeds must be integers, got {', '.join(bad)} in '{text}'")
    return seeds


class OverSeeds:
    """One paper table's rows, matched by key over the tables of several seeds."""

    def __init__(self, spec: PaperTable, tables: dict[str, Table]) -> None:
        if not tables:
            raise ValueError(f"{spec.file}: no seed's table to aggregate")
        self.spec, self.tables, self.seeds = spec, tables, list(tables)
        first = next(iter(tables.values()))
        missing = [k for k in spec.keys if k not in first.columns]
        if missing:
            raise ValueError(f"{spec.file} has no key column {', '.join(missing)} (columns: {', '.join(first.columns)})")
        self.columns = measurement_columns(first, spec)
        self.rows: dict[tuple, dict[str, dict[str, object]]] = {}  # key -> seed -> column -> value
        for seed, table in tables.items():
            for row in table.rows:
                record = dict(zip(table.columns, row))
                self.rows.setdefault(tuple(record[k] for k in spec.keys), {})[seed] = record
        self.keys = list(self.rows)  # the aggregate's order (first seed's rows, then any only later seeds have)

    def spread(self, key: tuple, column: str) -> Spread:
        values = [record.get(column) for record in self.rows[key].values()]
        return Spread.of([float(v) for v in values if isinstance(v, (int, float))])

    def csv_table(self) -> Table:
        columns = [*self.spec.keys, "n", "seeds", *(f"{c}_{s}" for c in self.columns for s in ("mean", "sd"))]
        rows = []
        for key in self.keys:
            spreads = [self.spread(key, c) for c in self.columns]
            rows.append([*key, len(self.rows[key]), " ".join(self.rows[key]), *(v for s in spreads for v in (s.mean, s.sd))])
        return Table(columns, rows)

    def mean_table(self) -> Table:
        """The keys and each measurement's mean over the seeds, in the columns of one seed's table."""
        rows = [[*key, *(self.spread(key, c).mean for c in self.columns)] for key in self.keys]
        return Table([*self.spec.keys, *self.columns], rows)

    def per_seed_table(self) -> Table:
        first = next(iter(self.tables.values()))
        return Table(["seed", *first.columns], [[seed, *row] for seed, table in self.tables.items() for row in table.rows])

    def markdown_rows(self) -> list[list[str]]:
        rows = []
        for key in self.keys:
            cells = []
            for column in self.columns:
                spread, digits = self.spread(key, column), self.spec.digits_of(column)
                if spread.n == 0:
                    cells.append("")
                elif spread.n == 1:
                    cells.append(f"{format_value(spread.mean, digits)} (1 seed)")
                else:
                    cells.append(f"{spread.mean:.{digits}f} ± {spread.sd:.{digits}f}")
            rows.append([*(format_key(v) for v in key),
                         str(len(self.rows[key])), *cells])
        return rows

    def markdown(self) -> str:
        return markdown_table([*self.spec.keys, "n", *self.columns], self.markdown_rows()).rstrip("\n")


def seed_tables(seeds_dir: Path, seeds: list[str], spec: PaperTable) -> dict[str, Table]:
    """Each seed's table from ``<seeds_dir>/seed_<s>/<spec.file>``."""
    return {seed: read_table(seeds_dir / f"seed_{seed}" / spec.file) for seed in seeds}


def write_over_seeds(name: str, seeds_dir: str | Path, seeds: list[str]) -> list[Path]:
    """Write the over-seeds and per-seed files of every table of paper ``name``; returns their paths."""
    seeds_dir = Path(seeds_dir)
    written = []
    for spec in paper(name).tables:
        over = OverSeeds(spec, seed_tables(seeds_dir, seeds, spec))
        stem = Path(spec.file).name.removesuffix(".csv")
        written.append(write_csv(seeds_dir / f"{stem}_over_seeds.csv", over.csv_table()))
        written.append(write_csv(seeds_dir / f"{stem}_per_seed.csv", over.per_seed_table()))
        text = "\n".join([f"# {spec.title}", "",
                          f"Mean ± sample standard deviation over seeds {', '.join(seeds)} (n: seeds with a value).", "",
                          over.markdown(), ""])
        written.append(write_text(seeds_dir / f"{stem}_over_seeds.md", text))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paper", help="snap, chen, pervin, pgd_study or lockshin")
    parser.add_argument("seeds_dir", type=Path, help="the folder holding seed_<s>/ of each seed")
    parser.add_argument("--seeds", required=True, help="comma-separated, e.g. 0,1,2")
    args = parser.parse_args(argv)
    for path in write_over_seeds(args.paper, args.seeds_dir, parse_seeds(args.seeds)):
        print(f"wrote {path}")
        if path.suffix == ".md":
            print(path.read_text())


if __name__ == "__main__":
    main()
