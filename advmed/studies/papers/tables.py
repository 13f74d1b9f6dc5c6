"""The tables each paper's pipeline writes (``make paper-<name>``): which CSV files, which columns name
a row, and how they are printed. One registry, read by the seed spread (:mod:`advmed.studies.papers.over_seeds`)
and the README figures (:mod:`advmed.studies.papers.readme_figures`), so that a table is described once."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from advmed.utils.tables import Table


@dataclass(frozen=True)
class PaperTable:
    """One CSV a paper's aggregate writes, relative to the paper's output folder.

    ``keys`` name a row (e.g. the swept eps, or the model); every other column that holds numbers is
    a measurement; ``drop`` lists columns that are neither (job folders). ``digits`` is the printed
    precision of the measurements, ``column_digits`` overrides it per column.
    """

    file: str
    keys: tuple[str, ...]
    title: str
    drop: tuple[str, ...] = ("job",)
    digits: int = 3
    column_digits: dict[str, int] = field(default_factory=dict)

    def digits_of(self, column: str) -> int:
        return self.column_digits.get(column, self.digits)


@dataclass(frozen=True)
class Paper:
    """A paper's pipeline: its make target, its output folder and its README."""

    name: str
    target: str
    output_dir: str
    readme: str
    tables: tuple[PaperTable, ...]


PAPERS: dict[str, Paper] = {
    paper.name: paper
    for paper in (
        Paper("snap", "paper-snap", "outputs/paper_snap", "experiments/snap/README.md", (
            PaperTable("area_fraction_sweep.csv", ("area_fraction",), "SNAP against the patch area",
                       column_digits={"test/area_fraction": 4, "test/steps": 1}),
        )),
        Paper("chen", "paper-chen", "outputs/paper_chen", "experiments/chen/README.md", (
            PaperTable("table1.csv", ("row",), "Table 1: Dice per organ and perceptibility p", column_digits={"p": 4}),
        )),
        Paper("pervin", "paper-pervin", "outputs/paper_pervin", "experiments/pervin/README.md", (
            PaperTable("table1_iou_over_epochs.csv", ("model", "epoch"), "Table 1: IoU over the training epochs"),
            PaperTable("table2_iou_vs_eps.csv", ("model", "eps"), "Table 2: IoU under attack against eps"),
        )),
        Paper("pgd_study", "paper-pgd-study", "outputs/paper_pgd_study", "experiments/pgd_study/README.md", (
            PaperTable("train/pgd_study/eps_sweep.csv", ("eps",), "Fig. 3a: PGD and APGD-CE success against eps"),
            PaperTable("train_size.csv", ("train_fraction", "eps"), "Fig. 3d: success against the training-set size"),
        )),
        Paper("lockshin", "paper-lockshin", "outputs/paper_lockshin", "experiments/lockshin/README.md", (
            PaperTable("table1.csv", ("train_set",), "Table 1: test accuracy of the three classifiers", digits=4),
        )),
        Paper("robust_training", "paper-robust-training", "outputs/paper_robust_training",
              "experiments/robust_training/README.md", (
            PaperTable("table.csv", ("method",), "Six training objectives: accuracy clean, under FGSM, PGD-20 and "
                       "AutoAttack at the training eps, and training time per epoch", digits=3,
                       column_digits={"train_s_per_epoch": 1}),
        )),
    )
}


def paper(name: str) -> Paper:
    if name not in PAPERS:
        raise ValueError(f"unknown paper '{name}': one of {', '.join(PAPERS)}")
    return PAPERS[name]


def parse_value(text: str):
    """A CSV cell as a number where it is one (``''`` -> None), else the text."""
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def read_table(path: str | Path) -> Table:
    """A CSV written by :func:`advmed.utils.tables.write_csv`, numbers parsed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table not found: '{path}' (did the paper's pipeline finish? its aggregate writes it)")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"'{path}' is empty: expected a header row and one row per setting")
    return Table(rows[0], [[parse_value(cell) for cell in row] for row in rows[1:]])


def measurement_columns(table: Table, spec: PaperTable) -> list[str]:
    """The columns of ``table`` that hold measurements: not a key, not dropped, a number in some row."""
    columns = []
    for i, name in enumerate(table.columns):
        if name in spec.keys or name in spec.drop:
            continue
        if any(isinstance(row[i], (int, float)) for row in table.rows):
            columns.append(name)
    return columns


def format_key(value) -> str:
    """A key cell as the aggregate wrote it (``0.1``, not ``0.100``): keys name rows, they are not measured."""
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def format_value(value, digits: int) -> str:
    """Numbers at ``digits`` decimals (integers as they are), ``None``/NaN blank, text as it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
