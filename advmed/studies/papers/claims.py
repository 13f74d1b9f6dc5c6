"""The claims of each paper that its measured tables can confirm or refute, checked per seed and on
the mean over seeds (:mod:`advmed.studies.papers.readme_figures` prints the verdicts under the tables).

A claim is a function of one run's tables (``{table file: Table}``) that returns True or False; it is
checked on each seed's tables and on the table of means. "Holds in every seed" and "holds on the mean
only" are different statements about a method, and a reader should see which one a README makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from advmed.utils.tables import Table

Tables = dict[str, Table]


@dataclass(frozen=True)
class Claim:
    text: str
    holds: Callable[[Tables], bool | None]  # None: the tables do not measure it


def _rows(table: Table) -> list[dict]:
    return [dict(zip(table.columns, row)) for row in table.rows]


def _strictly(values: list[float], falling: bool) -> bool:
    pairs = list(zip(values, values[1:]))
    return bool(pairs) and all((b < a) if falling else (b > a) for a, b in pairs)


# --------------------------------------------------------------------------- SNAP


def _snap(tables: Tables) -> list[dict]:
    return sorted(_rows(tables["area_fraction_sweep.csv"]), key=lambda r: r["area_fraction"])


SNAP = (
    Claim("accuracy under SNAP falls as the patch area grows",
          lambda t: _strictly([r["test/adv_acc"] for r in _snap(t)], falling=True)),
    Claim("targeted success grows with the patch area",
          lambda t: _strictly([r["test/attack_success_rate"] for r in _snap(t)], falling=False)),
    Claim("patches covering at most 10 % of the image lower accuracy by at least 0.2 (paper: 0.963 -> 0.690)",
          lambda t: any(r["area_fraction"] == 0.1 and r["test/acc"] - r["test/adv_acc"] >= 0.2 for r in _snap(t))),
    Claim("the patches stay within their area budget",
          lambda t: all(r["test/area_fraction"] <= r["area_fraction"] + 1e-9 for r in _snap(t))),
)


# --------------------------------------------------------------------------- Chen et al.

ORGANS = ("pancreas", "kidneys", "liver", "spleen")


def _chen(tables: Tables) -> dict[str, dict]:
    return {r["row"]: r for r in _rows(tables["table1.csv"])}


def _mean_dice(row: dict) -> float:
    return sum(row[o] for o in ORGANS) / len(ORGANS)


def _xi_rows(tables: Tables) -> list[dict]:
    rows = _chen(tables)
    xi = sorted((float(name.split("=", 1)[1]), row) for name, row in rows.items() if name.startswith("xi="))
    return [row for _, row in xi]


def _fields_break_less(tables: Tables) -> bool:
    rows = _chen(tables)
    dv = next((r for name, r in rows.items() if name == "xi=2.0"), None)
    d, v = rows.get("D xi=2.0"), rows.get("V xi=2.0")
    return None not in (dv, d, v) and _mean_dice(dv) < min(_mean_dice(d), _mean_dice(v))


CHEN = (
    Claim("mean Dice over the organs falls with xi, strictly", lambda t: _strictly([_mean_dice(r) for r in _xi_rows(t)], True)),
    Claim("the perceptibility p grows with xi, strictly", lambda t: _strictly([r["p"] for r in _xi_rows(t)], False)),
    Claim("at xi 2.0 the D+V attack breaks more (lower mean Dice) than its D or V field alone", _fields_break_less),
    Claim("at the largest xi every organ's Dice is below 70 % of clean (the paper's 30 % decrease)",
          lambda t: all(_xi_rows(t)[-1][o] < 0.7 * _chen(t)["clean"][o] for o in ORGANS)),
)


# --------------------------------------------------------------------------- Pervin et al.


def _pervin(tables: Tables, column: str) -> dict[tuple[str, float], float]:
    return {(r["model"], float(r["eps"])): r[column] for r in _rows(tables["table2_iou_vs_eps.csv"])
            if isinstance(r.get(column), (int, float))}


def _beats_plain(model: str, column: str) -> Callable[[Tables], bool | None]:
    """``model``'s IoU above the plain U-Net's under the attack of ``column`` at every eps > 0 it has."""
    def holds(tables: Tables) -> bool | None:
        iou = _pervin(tables, column)
        eps = sorted(e for m, e in iou if m == "unet" and e > 0)
        if not eps:
            return None  # that attack was not run
        return all((model, e) in iou and iou[(model, e)] > iou[("unet", e)] for e in eps)
    return holds


def _sea_shrinks_the_gap(tables: Tables) -> bool | None:
    """At every eps SEA ran, the augmented U-Nets' lead over the plain one is smaller under SEA than under FGSM."""
    fgsm, sea = _pervin(tables, "iou"), _pervin(tables, "sea_iou")
    eps = sorted(e for m, e in sea if m == "unet" and e > 0)
    if not eps:
        return None
    return all(sea[(m, e)] - sea[("unet", e)] < fgsm[(m, e)] - fgsm[("unet", e)]
               for m in ("unet_fgsm", "unet_invfgsm") for e in eps)


PERVIN = (
    Claim("FGSM augmentation: higher IoU than the plain U-Net under FGSM at every eps > 0", _beats_plain("unet_fgsm", "iou")),
    Claim("Inverse-FGSM augmentation: higher IoU than the plain U-Net under FGSM at every eps > 0",
          _beats_plain("unet_invfgsm", "iou")),
    Claim("FGSM augmentation: higher IoU than the plain U-Net under SEA at every eps SEA ran", _beats_plain("unet_fgsm", "sea_iou")),
    Claim("Inverse-FGSM augmentation: higher IoU than the plain U-Net under SEA at every eps SEA ran",
          _beats_plain("unet_invfgsm", "sea_iou")),
    Claim("the augmentations' lead is smaller under SEA than under FGSM (robustness to the attack they were made with)",
          _sea_shrinks_the_gap),
)

# --------------------------------------------------------------------------- robust training objectives

ROBUST_METHODS = ("mixed_fgsm", "pgd_at", "trades", "mart", "fgsm_rs")


def _methods(tables: Tables) -> dict[str, dict]:
    return {r["method"]: r for r in _rows(tables["table.csv"])}


def _above_standard(tables: Tables) -> bool | None:
    """Every robust method in the table above the standard model under AutoAttack (None: no robust method)."""
    rows = _methods(tables)
    robust = [rows[m] for m in ROBUST_METHODS if m in rows]
    if not robust:
        return None
    return all(r["autoattack_acc"] > rows["standard"]["autoattack_acc"] for r in robust)


def _cheaper(single: str, multi: str) -> Callable[[Tables], bool]:
    return lambda t: _methods(t)[single]["train_s_per_epoch"] < _methods(t)[multi]["train_s_per_epoch"]


ROBUST_TRAINING = (
    Claim("every robust method's AutoAttack accuracy is above the standard model's", _above_standard),
    Claim("PGD-20 accuracy >= AutoAttack accuracy for every method (AutoAttack is the stronger evaluation)",
          lambda t: all(r["pgd_acc"] >= r["autoattack_acc"] for r in _methods(t).values())),
    Claim("FGSM accuracy >= PGD-20 accuracy for every method (no sign of gradient masking)",
          lambda t: all(r["fgsm_acc"] >= r["pgd_acc"] for r in _methods(t).values())),
    Claim("fgsm_rs costs less per epoch than pgd_at", _cheaper("fgsm_rs", "pgd_at")),
    Claim("mixed_fgsm costs less per epoch than pgd_at", _cheaper("mixed_fgsm", "pgd_at")),
)

# --------------------------------------------------------------------------- Lockshin et al.

LOCKSHIN_ROWS = ("real", "real+synthetic", "real+synthetic+adversarial")


def _lockshin(tables: Tables, column: str) -> list[float]:
    """``column`` of the three classifiers, in the paper's row order."""
    rows = {r["train_set"]: r for r in _rows(tables["table1.csv"])}
    return [rows[name][column] for name in LOCKSHIN_ROWS]


def _adversarial_above_real(column: str) -> Callable[[Tables], bool | None]:
    def holds(tables: Tables) -> bool | None:
        values = _lockshin(tables, column)
        return None if None in (values[0], values[2]) else values[2] > values[0]
    return holds


LOCKSHIN = (
    Claim("AdvGAN augmentation raises accuracy under AdvGAN above the real-only classifier's (paper: 55.24 -> 97.40)",
          _adversarial_above_real("advgan_acc")),
    Claim("accuracy under AdvGAN grows row by row: real < +synthetic < +adversarial",
          lambda t: _strictly(_lockshin(t, "advgan_acc"), falling=False)),
    Claim("the augmented classifier keeps its clean accuracy: within 0.05 of the real-only one's or above",
          lambda t: _lockshin(t, "clean_acc")[2] >= _lockshin(t, "clean_acc")[0] - 0.05),
    Claim("AdvGAN augmentation raises accuracy under FGSM eps 0.1 (paper: 68.76 -> 90.38)", _adversarial_above_real("fgsm_acc")),
    Claim("AdvGAN augmentation raises accuracy under AutoAttack at the FGSM eps (the strong evaluation, contract 11)",
          _adversarial_above_real("autoattack_acc")),
)

# --------------------------------------------------------------------------- PGD study


def _sweep(tables: Tables) -> list[dict]:
    return sorted(_rows(tables["train/pgd_study/eps_sweep.csv"]), key=lambda r: r["eps"])


def _never_falls(values: list[float]) -> bool:
    return all(b >= a for a, b in zip(values, values[1:]))


def _fractions(tables: Tables) -> dict[float, list[dict]]:
    by: dict[float, list[dict]] = {}
    for r in _rows(tables["train_size.csv"]):
        by.setdefault(r["train_fraction"], []).append(r)
    return {f: sorted(rows, key=lambda r: r["eps"]) for f, rows in by.items()}


def _apgd_at_least_pgd(tables: Tables) -> bool | None:
    sweep = _sweep(tables)
    if not sweep or sweep[0].get("apgd_success_rate") is None:
        return None
    return all(r["apgd_success_rate"] >= r["success_rate"] for r in sweep)


PGD_STUDY = (
    Claim("Fig. 3a: PGD success never falls as eps grows", lambda t: _never_falls([r["success_rate"] for r in _sweep(t)])),
    Claim("Fig. 3a: PGD success saturates: at least 0.95 at the largest eps", lambda t: _sweep(t)[-1]["success_rate"] >= 0.95),
    Claim("APGD-CE at equal iterations fools at least as many eligible images as PGD at every eps", _apgd_at_least_pgd),
    Claim("Fig. 3d: at every training-set fraction PGD success never falls as eps grows",
          lambda t: all(_never_falls([r["success_rate"] for r in rows]) for rows in _fractions(t).values())),
)

CLAIMS: dict[str, tuple[Claim, ...]] = {"snap": SNAP, "chen": CHEN, "pervin": PERVIN, "robust_training": ROBUST_TRAINING,
                                        "lockshin": LOCKSHIN, "pgd_study": PGD_STUDY}


def verdict(claim: Claim, per_seed: dict[str, Tables], mean: Tables | None) -> str:
    """``holds in every seed (0, 1, 2)``, ``holds in 2 of 3 seeds (0, 2) and on the mean``, ``not
    measured`` (the tables lack what the claim is about, e.g. a SEA column that was not run)."""
    results = {seed: _safe(claim, tables) for seed, tables in per_seed.items()}
    measured = [seed for seed, result in results.items() if result is not None]
    if not measured:
        return "not measured"
    held = [seed for seed in measured if results[seed]]
    on_mean = mean is not None and bool(_safe(claim, mean))
    n = len(measured)
    if len(held) == n:
        return f"holds in every seed ({', '.join(held)})"
    seeds = f"holds in {len(held)} of {n} seeds" + (f" ({', '.join(held)})" if held else "")
    return seeds + (" and on the mean" if on_mean else ", not on the mean")


def _safe(claim: Claim, tables: Tables) -> bool | None:
    """None where the tables lack the rows the claim reads (a table without that setting)."""
    try:
        result = claim.holds(tables)
    except (KeyError, TypeError, IndexError, StopIteration):
        return None
    return None if result is None else bool(result)
