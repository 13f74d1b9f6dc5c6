"""Chen et al. 2019, Table 1: the U-Net's per-organ Dice on clean and attacked CT slices and the
perceptibility p, as CSV + markdown + PNG, from the attacker runs that ``make paper-chen`` writes.

Every run directory under ``<paper dir>`` whose ``.hydra/config.yaml`` trains a
``DeformationAttackerModule`` and which holds a ``metrics.json`` is one row: its ``model.xi`` and
``model.components`` (``dv``, ``d``, ``v``) name it. Writes ``table1.csv`` (columns
``row,pancreas,kidneys,liver,spleen,p``, Dice in [0, 1]; rows ``clean``, ``xi=<x>`` for each D+V run,
``D xi=2.0`` / ``V xi=2.0``: the deformation or the intensity field of the xi 2.0 D+V attacker
applied alone, the paper's reading), ``table1.md`` (plus the 30 % borderline row, the fields of
every D+V attacker alone, the attackers trained with one field only, and the paper's findings
checked one by one) and ``table1.png``:

    python experiments/chen/aggregate.py outputs/paper_chen
    python experiments/chen/aggregate.py outputs/paper_chen --tolerance 0.02

The clean row is the U-Net on the unattacked test split; every run tests the same U-Net on the same
split, and the script refuses runs whose clean Dice disagree (different U-Nets or data).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from advmed.utils.files import atomic_write, write_text
from advmed.utils.loggers import markdown_table
from advmed.utils.tables import Table, write_csv

ORGANS = ("pancreas", "kidneys", "liver", "spleen")  # the paper's column order
ATTACKER = "advmed.models.deformation.DeformationAttackerModule"
ORDER = {"dv": 0, "d": 1, "v": 2}


@dataclass(frozen=True)
class AttackerRun:
    path: Path
    xi: float
    components: str
    metrics: dict[str, float]

    def row(self, prefix: str = "adv_") -> list[float]:
        """Dice per organ (paper order) and p of the attacked images ``prefix`` names."""
        p_key = "test/p" if prefix == "adv_" else f"test/{prefix}p"
        return [self.metrics.get(f"test/{prefix}dice_{organ}", math.nan) for organ in ORGANS] + [self.metrics.get(p_key, math.nan)]


def find_runs(paper_dir: Path) -> list[AttackerRun]:
    """Every finished attacker run under ``paper_dir``, sorted by components (dv, d, v) then xi."""
    runs = []
    for config_path in sorted(paper_dir.rglob(".hydra/config.yaml")):
        run_dir = config_path.parent.parent
        cfg = OmegaConf.load(config_path)
        if OmegaConf.select(cfg, "model._target_") != ATTACKER:
            continue
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.is_file():
            print(f"skipping {run_dir}: no metrics.json (failed or still running)")
            continue
        metrics = json.loads(metrics_path.read_text())["metrics"]
        runs.append(AttackerRun(run_dir, float(cfg.model.xi), str(cfg.model.components), metrics))
    if not runs:
        raise FileNotFoundError(f"no finished deformation attacker runs under {paper_dir}: run make paper-chen first")
    return sorted(runs, key=lambda r: (ORDER[r.components], r.xi))


def clean_row(runs: list[AttackerRun], tolerance: float = 1e-6) -> list[float]:
    """The U-Net's clean Dice per organ, the same in every run (else a ValueError naming the runs)."""
    rows = [[r.metrics.get(f"test/dice_{organ}", math.nan) for organ in ORGANS] for r in runs]
    for run, row in zip(runs[1:], rows[1:]):
        if any(abs(a - b) > tolerance for a, b in zip(rows[0], row)):
            raise ValueError(
                f"clean Dice differs between {runs[0].path} {rows[0]} and {run.path} {row}: "
                "the runs attacked different U-Nets or test data; aggregate runs of one U-Net only"
            )
    return rows[0] + [math.nan]


def xi_label(xi: float) -> str:
    """``2.0`` -> ``"2.0"``, ``0.25`` -> ``"0.25"`` (the table's row names)."""
    return f"{xi:.1f}" if round(xi, 1) == xi else f"{xi:g}"


def mean_dice(row: list[float]) -> float:
    return sum(row[:4]) / 4


def table1(runs: list[AttackerRun], fields_xi: float = 2.0) -> Table:
    """Rows ``clean``, ``xi=<x>`` per D+V run and ``D xi=<fields_xi>`` / ``V xi=<fields_xi>``: the
    deformation and the intensity field of the D+V attacker at ``fields_xi`` applied alone."""
    sweep = [r for r in runs if r.components == "dv"]
    rows = [["clean", *clean_row(runs)]]
    rows += [[f"xi={xi_label(r.xi)}", *r.row()] for r in sweep]
    at = next((r for r in sweep if r.xi == fields_xi), None)
    if at is None:
        raise ValueError(f"no D+V attacker trained at xi={fields_xi} (have {[r.xi for r in sweep]}): "
                         "train one, or pass --fields-xi with one of those values")
    rows += [[f"{name} xi={xi_label(fields_xi)}", *at.row(prefix)] for name, prefix in (("D", "d_only_"), ("V", "v_only_"))]
    return Table(["row", *ORGANS, "p"], rows)


def is_monotone(values: list[float], decreasing: bool, tolerance: float) -> bool:
    """Each step moves the stated way or back by at most ``tolerance``."""
    sign = -1.0 if decreasing else 1.0
    return all(sign * (b - a) >= -tolerance for a, b in zip(values, values[1:]))


def checks(runs: list[AttackerRun], table: Table, tolerance: float) -> list[str]:
    """The paper's findings, each stated with whether this table reproduces it."""
    sweep = [r for r in runs if r.components == "dv"]
    dice = [mean_dice(r.row()) for r in sweep]
    p = [r.row()[4] for r in sweep]
    xent = [r.metrics.get("test/xent", math.nan) for r in sweep]
    rows = {row[0]: row[1:] for row in table.rows}
    both = next(row for name, row in rows.items() if name.startswith("xi=") and f"D {name}" in rows)
    lines = [
        "- the masked cross-entropy of eq. 5 on the test split, which xi asks for: "
        + ", ".join(f"xi {r.xi:g}: {v:.2f}" for r, v in zip(sweep, xent)),
        f"- mean Dice falls as xi grows (each step up by at most {tolerance}): "
        f"{is_monotone(dice, True, tolerance)} ({', '.join(f'{v:.3f}' for v in dice)})",
        f"- p grows with xi (each step down by at most {tolerance / 10:g}): "
        f"{is_monotone(p, False, tolerance / 10)} ({', '.join(f'{v:.4f}' for v in p)})",
    ]
    for name in ("D", "V"):
        part = next(row for key, row in rows.items() if key.startswith(f"{name} xi="))
        lines.append(f"- D+V lowers mean Dice more than {name} alone: {mean_dice(both) < mean_dice(part)} "
                     f"({mean_dice(both):.3f} vs {mean_dice(part):.3f})")
    for alone in (r for r in runs if r.components != "dv"):
        paired = next((r for r in sweep if r.xi == alone.xi), None)
        if paired is not None:
            a, b = mean_dice(paired.row()), mean_dice(alone.row())
            lines.append(f"- (not the paper's rows) D+V lowers mean Dice more than an attacker trained with "
                         f"components={alone.components} at xi={alone.xi:g}: {a < b} ({a:.3f} vs {b:.3f})")
    return lines


def markdown(runs: list[AttackerRun], table: Table, tolerance: float) -> str:
    def fmt(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.3f}" if v > 0.2 or v == 0 else f"{v:.4f}"

    def md_rows(rows):
        return [[row[0], *map(fmt, row[1:])] for row in rows]

    clean = table.rows[0][1:5]
    rows = [*md_rows(table.rows[:1]), ["30 % decrease (borderline)", *(fmt(0.7 * v) for v in clean), "-"],
            *md_rows(table.rows[1:])]
    fields = [[f"I_{name} of xi={xi_label(r.xi)}", *r.row(prefix)]
              for r in runs if r.components == "dv" for name, prefix in (("D", "d_only_"), ("V", "v_only_"))]
    trained = [[f"trained with components={r.components}, xi={xi_label(r.xi)}", *r.row()]
               for r in runs if r.components != "dv"]
    lines = ["# Chen et al. 2019, Table 1 (synthetic CT)", "",
             "U-Net Dice per organ (pooled over the test split) on clean and attacked slices; p = mean |I_DV - I0| "
             "(eq. 7). The D / V rows apply the deformation or the intensity field of the D+V attacker alone "
             "(the paper's \"effect of D and V individually\"; its p values, both below the D+V row's, fit this reading).",
             "", markdown_table(table.columns, rows)]
    lines += ["## Each field of every D+V attacker alone", "", markdown_table(table.columns, md_rows(fields))]
    if trained:
        lines += ["## Attackers trained with one field only (`model.components=d|v`)", "",
                  "Each is trained to the same xi as the D+V attacker, so the damage asked for is the same; they differ "
                  "where the realism critic stops one field short of it.", "",
                  markdown_table(table.columns, md_rows(trained))]
    lines += ["## Checks", "", *checks(runs, table, tolerance), "", "Runs: " + ", ".join(f"`{r.path}`" for r in runs), ""]
    return "\n".join(lines)


def plot(runs: list[AttackerRun], path: Path) -> Path:
    sweep = [r for r in runs if r.components == "dv"]
    xi = [r.xi for r in sweep]
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for i, organ in enumerate(ORGANS):
        ax.plot(xi, [r.row()[i] for r in sweep], marker="o", label=organ)
    ax.set_xlabel("xi")
    ax.set_ylabel("Dice under attack")
    ax.set_ylim(0, 1)
    twin = ax.twinx()
    twin.plot(xi, [r.row()[4] for r in sweep], color="black", linestyle="--", marker="s", label="p")
    twin.set_ylabel("perceptibility p")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def aggregate(paper_dir: Path, tolerance: float = 0.02, fields_xi: float = 2.0) -> Table:
    runs = find_runs(paper_dir)
    table = table1(runs, fields_xi)
    write_csv(paper_dir / "table1.csv", table)
    write_text(paper_dir / "table1.md", markdown(runs, table, tolerance))
    plot(runs, paper_dir / "table1.png")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paper_dir", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.02, help="allowed step against the trend (mean Dice; p: a tenth)")
    parser.add_argument("--fields-xi", type=float, default=2.0, help="the D+V attacker whose fields alone give the D / V rows")
    args = parser.parse_args()
    aggregate(args.paper_dir, args.tolerance, args.fields_xi)
    print((args.paper_dir / "table1.md").read_text())


if __name__ == "__main__":
    main()
