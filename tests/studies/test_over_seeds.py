"""A paper's tables over seeds: rows matched by key, mean and sample sd by hand, a missing row counted
as missing, the per-seed rows kept, and the seed list checked."""

from __future__ import annotations

import math

import pytest

from advmed.studies.papers.over_seeds import OverSeeds, parse_seeds, write_over_seeds
from advmed.studies.papers.tables import PAPERS, read_table
from advmed.utils.tables import Table, write_csv

COLUMNS = ["area_fraction", "test/acc", "test/adv_acc", "test/attack_success_rate", "test/area_fraction", "test/steps", "job"]


def snap_table(adv: list[float], areas=(0.02, 0.1)) -> Table:
    return Table(COLUMNS, [[a, 0.9, v, 0.5, a * 0.98, 12.0, f"job_{a}"] for a, v in zip(areas, adv)])


def test_mean_and_sample_sd_by_hand(tmp_path):
    for seed, adv in (("0", [0.8, 0.5]), ("1", [0.6, 0.3]), ("2", [0.7, 0.4])):
        write_csv(tmp_path / f"seed_{seed}" / "area_fraction_sweep.csv", snap_table(adv))
    written = write_over_seeds("snap", tmp_path, ["0", "1", "2"])
    assert {p.name for p in written} == {"area_fraction_sweep_over_seeds.csv", "area_fraction_sweep_over_seeds.md",
                                         "area_fraction_sweep_per_seed.csv"}
    over = read_table(tmp_path / "area_fraction_sweep_over_seeds.csv")
    row = dict(zip(over.columns, over.rows[1]))
    assert row["area_fraction"] == 0.1 and row["n"] == 3 and row["seeds"] == "0 1 2"
    assert row["test/adv_acc_mean"] == pytest.approx(0.4)
    assert row["test/adv_acc_sd"] == pytest.approx(0.1)  # sqrt(((0.1)^2 + (0.1)^2 + 0) / 2)
    assert row["test/acc_sd"] == pytest.approx(0.0)
    assert "job_mean" not in over.columns  # job folders are neither keys nor measurements
    text = (tmp_path / "area_fraction_sweep_over_seeds.md").read_text()
    assert "| 0.1 | 3 | 0.900 ± 0.000 | 0.400 ± 0.100 |" in text
    assert "0.0980 ± 0.0000" in text and "12.0 ± 0.0" in text  # per-column precision of the spec
    per_seed = read_table(tmp_path / "area_fraction_sweep_per_seed.csv")
    assert per_seed.columns[0] == "seed" and per_seed.column("seed") == [0, 0, 1, 1, 2, 2]


def test_a_row_missing_in_one_seed_counts_as_missing_not_zero():
    spec = PAPERS["snap"].tables[0]
    over = OverSeeds(spec, {"0": snap_table([0.8, 0.5]), "1": snap_table([0.6], areas=(0.02,))})
    table = over.csv_table()
    rows = {row[0]: dict(zip(table.columns, row)) for row in table.rows}
    assert rows[0.02]["n"] == 2 and rows[0.02]["test/adv_acc_mean"] == pytest.approx(0.7)
    assert rows[0.1]["n"] == 1 and rows[0.1]["test/adv_acc_mean"] == pytest.approx(0.5)
    assert math.isnan(rows[0.1]["test/adv_acc_sd"])
    assert "0.500 (1 seed)" in over.markdown()


def test_blank_cells_are_skipped():
    spec = PAPERS["pervin"].tables[1]
    columns = ["model", "eps", "iou", "sea_iou"]
    tables = {"0": Table(columns, [["unet", 0.02, 0.7, None]]), "1": Table(columns, [["unet", 0.02, 0.6, 0.5]])}
    over = OverSeeds(spec, tables)
    assert over.spread(("unet", 0.02), "sea_iou").n == 1
    assert over.spread(("unet", 0.02), "iou").mean == pytest.approx(0.65)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no seeds"):
        parse_seeds("")
    with pytest.raises(ValueError, match="repeated"):
        parse_seeds("0,1,0")
    with pytest.raises(ValueError, match="integers, got a"):
        parse_seeds("0,a")
    assert parse_seeds("0, 1,2") == ["0", "1", "2"]
    with pytest.raises(FileNotFoundError, match="seed_0/area_fraction_sweep.csv"):
        write_over_seeds("snap", tmp_path, ["0"])
    with pytest.raises(ValueError, match="unknown paper 'snapp'"):
        write_over_seeds("snapp", tmp_path, ["0"])
    write_csv(tmp_path / "seed_0" / "area_fraction_sweep.csv", Table(["eps", "acc"], [[0.1, 0.5]]))
    with pytest.raises(ValueError, match="no key column area_fraction"):
        write_over_seeds("snap", tmp_path, ["0"])
