"""The robust-training comparison's claims on hand-made tables (the columns of
experiments/robust_training/aggregate.py): each holds where the numbers say so, fails where they do not,
and is "not measured" where the table lacks the rows it reads; the paper is registered for the seed
spread and the README figures."""

from __future__ import annotations

from advmed.studies.papers.claims import CLAIMS, ROBUST_TRAINING, verdict
from advmed.studies.papers.over_seeds import OverSeeds
from advmed.studies.papers.tables import PAPERS
from advmed.utils.tables import Table

COLUMNS = ["method", "clean_acc", "fgsm_acc", "pgd_acc", "autoattack_acc", "train_s_per_epoch"]
GOOD = {  # method: clean, fgsm, pgd, autoattack, seconds per epoch
    "standard": (0.85, 0.05, 0.00, 0.00, 4.0),
    "mixed_fgsm": (0.80, 0.50, 0.20, 0.10, 6.0),
    "pgd_at": (0.70, 0.50, 0.40, 0.30, 40.0),
    "trades": (0.72, 0.52, 0.42, 0.33, 45.0),
    "mart": (0.68, 0.50, 0.41, 0.31, 46.0),
    "fgsm_rs": (0.74, 0.48, 0.35, 0.25, 9.0),
}


def tables(rows: dict[str, tuple]) -> dict:
    return {"table.csv": Table(COLUMNS, [[m, *values] for m, values in rows.items()])}


def changed(method: str, column: str, value: float) -> dict:
    rows = {m: list(v) for m, v in GOOD.items()}
    rows[method][COLUMNS.index(column) - 1] = value
    return tables({m: tuple(v) for m, v in rows.items()})


def test_the_paper_is_registered_with_its_claims():
    paper = PAPERS["robust_training"]
    assert paper.target == "paper-robust-training" and paper.output_dir == "outputs/paper_robust_training"
    assert paper.readme == "experiments/robust_training/README.md"
    (spec,) = paper.tables
    assert spec.file == "table.csv" and spec.keys == ("method",)
    assert CLAIMS["robust_training"] is ROBUST_TRAINING


def test_every_claim_holds_on_a_table_that_says_so():
    for claim in ROBUST_TRAINING:
        assert verdict(claim, {"0": tables(GOOD)}, None) == "holds in every seed (0)", claim.text


def test_each_claim_fails_where_its_numbers_do_not_hold():
    above, pgd_vs_aa, fgsm_vs_pgd, fgsm_rs_cost, mixed_cost = ROBUST_TRAINING
    assert verdict(above, {"0": changed("mixed_fgsm", "autoattack_acc", 0.0)}, None).startswith("holds in 0")  # a tie is not above
    assert verdict(pgd_vs_aa, {"0": changed("trades", "autoattack_acc", 0.43)}, None).startswith("holds in 0")
    assert verdict(fgsm_vs_pgd, {"0": changed("fgsm_rs", "fgsm_acc", 0.30)}, None).startswith("holds in 0")
    assert verdict(fgsm_rs_cost, {"0": changed("fgsm_rs", "train_s_per_epoch", 40.0)}, None).startswith("holds in 0")
    assert verdict(mixed_cost, {"0": changed("mixed_fgsm", "train_s_per_epoch", 41.0)}, None).startswith("holds in 0")
    # one seed of two: said so, and whether the mean holds
    two = {"0": tables(GOOD), "1": changed("pgd_at", "autoattack_acc", 0.0)}
    mean = OverSeeds(PAPERS["robust_training"].tables[0], {s: t["table.csv"] for s, t in two.items()}).mean_table()
    assert verdict(above, two, {"table.csv": mean}) == "holds in 1 of 2 seeds (0) and on the mean"


def test_claims_about_rows_that_were_not_run_are_not_measured():
    above, _, _, fgsm_rs_cost, _ = ROBUST_TRAINING
    without_standard = tables({m: v for m, v in GOOD.items() if m != "standard"})
    assert verdict(above, {"0": without_standard}, None) == "not measured"
    only_standard = tables({"standard": GOOD["standard"]})
    assert verdict(above, {"0": only_standard}, None) == "not measured"
    assert verdict(fgsm_rs_cost, {"0": tables({m: v for m, v in GOOD.items() if m != "fgsm_rs"})}, None) == "not measured"
