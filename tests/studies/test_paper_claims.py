"""Each paper claim on hand-made tables: it holds where the numbers say so, fails where they do not,
and is "not measured" where the table lacks its column."""

from __future__ import annotations

from advmed.studies.papers.claims import CHEN, PERVIN, SNAP, verdict
from advmed.utils.tables import Table

ORGANS = ["pancreas", "kidneys", "liver", "spleen"]


def chen(xi_dice: list[float], d: float = 0.8, v: float = 0.7, p_step: float = 0.01) -> dict:
    rows = [["clean", 0.9, 0.9, 0.9, 0.9, None]]
    rows += [[f"xi={xi}", *[dice] * 4, p_step * (i + 1)] for i, (xi, dice) in enumerate(zip((0.5, 1.0, 2.0), xi_dice))]
    rows += [["D xi=2.0", *[d] * 4, 0.01], ["V xi=2.0", *[v] * 4, 0.02]]
    return {"table1.csv": Table(["row", *ORGANS, "p"], rows)}


def test_chen_claims():
    falls, grows, fields, decrease = CHEN
    good = chen([0.8, 0.6, 0.5])
    assert all(verdict(c, {"0": good}, None).startswith("holds in every seed") for c in CHEN)
    flat = chen([0.8, 0.8, 0.5])
    assert verdict(falls, {"0": flat}, None) == "holds in 0 of 1 seeds, not on the mean"  # strictly
    assert verdict(grows, {"0": chen([0.8, 0.6, 0.5], p_step=0.0)}, None).startswith("holds in 0")
    assert verdict(fields, {"0": chen([0.8, 0.6, 0.75])}, None).startswith("holds in 0")  # V alone breaks more
    assert verdict(decrease, {"0": chen([0.8, 0.6, 0.65])}, None).startswith("holds in 0")  # 0.65 >= 0.7 * 0.9


def pervin(fgsm: dict, sea: dict | None = None) -> dict:
    rows = [[m, e, iou, (sea or {}).get((m, e))] for (m, e), iou in fgsm.items()]
    return {"table2_iou_vs_eps.csv": Table(["model", "eps", "iou", "sea_iou"], rows)}


def test_pervin_claims_and_a_column_that_was_not_run():
    fgsm = {("unet", 0.0): 0.8, ("unet", 0.1): 0.4, ("unet_fgsm", 0.0): 0.8, ("unet_fgsm", 0.1): 0.6,
            ("unet_invfgsm", 0.0): 0.8, ("unet_invfgsm", 0.1): 0.39}
    sea = {("unet", 0.1): 0.05, ("unet_fgsm", 0.1): 0.06, ("unet_invfgsm", 0.1): 0.2}
    without_sea, with_sea = pervin(fgsm), pervin(fgsm, sea)
    fgsm_beats, invfgsm_beats, fgsm_sea, invfgsm_sea, shrinks = PERVIN
    assert verdict(fgsm_beats, {"0": without_sea}, None) == "holds in every seed (0)"
    assert verdict(invfgsm_beats, {"0": without_sea}, None).startswith("holds in 0")  # 0.39 < 0.40
    assert verdict(fgsm_sea, {"0": without_sea}, None) == "not measured"
    assert verdict(fgsm_sea, {"0": with_sea}, None) == "holds in every seed (0)"
    # the Inverse-FGSM lead grows under SEA (0.15 > -0.01): the gap does not shrink for both models
    assert verdict(shrinks, {"0": with_sea}, None).startswith("holds in 0")
    assert verdict(invfgsm_sea, {"0": with_sea, "1": without_sea}, None) == "holds in every seed (0)"


def test_snap_area_budget():
    budget = SNAP[3]
    over = {"area_fraction_sweep.csv": Table(["area_fraction", "test/acc", "test/adv_acc", "test/attack_success_rate",
                                              "test/area_fraction", "test/steps"], [[0.05, 0.9, 0.5, 0.5, 0.051, 3.0]])}
    assert verdict(budget, {"0": over}, None).startswith("holds in 0")


def lockshin(advgan: list, fgsm: list, autoattack: list, clean: list = (0.9, 0.85, 0.88)) -> dict:
    rows = [[name, c, a, f, aa] for name, c, a, f, aa in
            zip(("real", "real+synthetic", "real+synthetic+adversarial"), clean, advgan, fgsm, autoattack)]
    return {"table1.csv": Table(["train_set", "clean_acc", "advgan_acc", "fgsm_acc", "autoattack_acc"], rows)}


def test_lockshin_claims():
    from advmed.studies.papers.claims import LOCKSHIN

    advgan_up, row_by_row, keeps_clean, fgsm_up, aa_up = LOCKSHIN
    paper_like = lockshin([0.2, 0.3, 0.9], [0.1, 0.1, 0.4], [0.0, 0.0, 0.0])
    for claim in (advgan_up, row_by_row, keeps_clean, fgsm_up):
        assert verdict(claim, {"42": paper_like}, None) == "holds in every seed (42)"
    assert verdict(aa_up, {"42": paper_like}, None).startswith("holds in 0")  # robust to its own AdvGAN only
    assert verdict(row_by_row, {"0": lockshin([0.3, 0.2, 0.9], [0, 0, 0], [0, 0, 0])}, None).startswith("holds in 0")
    dropped = lockshin([0.2, 0.3, 0.9], [0.1, 0.1, 0.4], [0, 0, 0], clean=(0.9, 0.85, 0.84))
    assert verdict(keeps_clean, {"0": dropped}, None).startswith("holds in 0")
    assert verdict(aa_up, {"0": lockshin([0.2, 0.3, 0.9], [0.1, 0.1, 0.4], [None, None, None])}, None) == "not measured"


def test_pgd_study_claims():
    from advmed.studies.papers.claims import PGD_STUDY

    never_falls, saturates, apgd, by_fraction = PGD_STUDY
    columns = ["eps", "alpha", "n_images", "n_eligible", "n_fooled", "success_rate", "apgd_n_fooled", "apgd_success_rate"]

    def tables(pgd: list, apgd_rates: list | None, fractions: dict) -> dict:
        sweep = Table(columns if apgd_rates else columns[:6],
                      [[e, 0.01, 10, 10, 0, p, *([0, a] if apgd_rates else [])]
                       for e, p, a in zip((0.02, 0.04, 0.06), pgd, apgd_rates or pgd)])
        size = Table(["train_fraction", "eps", "n_eligible", "n_fooled", "success_rate"],
                     [[f, e, 10, 0, r] for f, rates in fractions.items() for e, r in zip((0.02, 0.04), rates)])
        return {"train/pgd_study/eps_sweep.csv": sweep, "train_size.csv": size}

    good = tables([0.8, 0.97, 1.0], [0.85, 0.98, 1.0], {0.1: [0.9, 1.0], 1.0: [0.7, 0.9]})
    assert all(verdict(c, {"42": good}, None) == "holds in every seed (42)" for c in PGD_STUDY)
    bad = tables([0.8, 0.7, 0.9], [0.8, 0.6, 0.9], {0.1: [0.9, 0.8], 1.0: [0.7, 0.9]})
    for claim in PGD_STUDY:
        assert verdict(claim, {"42": bad}, None).startswith("holds in 0")
    assert verdict(apgd, {"42": tables([0.8, 0.97, 1.0], None, {})}, None) == "not measured"
