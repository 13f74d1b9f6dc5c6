"""Tables of the PGD study (Fig. 3a-c) from its per-image records: success rates vs eps, vs
iterations and per clean-confidence bin, counting eligible images only."""

from __future__ import annotations

import math

import torch

from advmed.studies.pgd_study_records import StudyRecords
from advmed.studies.pgd_study_settings import ConfidenceBins
from advmed.utils.tables import Table


def _rate(n_fooled: int, n_eligible: int) -> float:
    return n_fooled / n_eligible if n_eligible else math.nan  # undefined without eligible images


EPS_SWEEP_COLUMNS = ["eps", "alpha", "n_images", "n_eligible", "n_fooled", "success_rate"]
# Appended when the study ran APGD-CE beside PGD (study.apgd): same eps, iterations and eligible images.
APGD_COLUMNS = ["apgd_n_fooled", "apgd_success_rate"]


def eps_sweep_table(records: StudyRecords) -> Table:
    """Fig. 3a: PGD's success rate after ``max_iter`` steps, one row per eps (``alpha``: PGD's
    step); with APGD, also APGD-CE's after as many iterations (``apgd_n_fooled``,
    ``apgd_success_rate``), over the same eligible images."""
    n_images, n_eligible = len(records.labels), int(records.eligible.sum())
    rows = []
    for e, (eps, alpha) in enumerate(zip(records.eps, records.alpha)):
        n_fooled = int(records.fooled[e, -1].sum())
        row = [eps, alpha, n_images, n_eligible, n_fooled, _rate(n_fooled, n_eligible)]
        if records.apgd_fooled is not None:
            apgd_n_fooled = int(records.apgd_fooled[e].sum())
            row += [apgd_n_fooled, _rate(apgd_n_fooled, n_eligible)]
        rows.append(row)
    columns = EPS_SWEEP_COLUMNS + (APGD_COLUMNS if records.apgd_fooled is not None else [])
    return Table(list(columns), rows)


def iterations_table(records: StudyRecords) -> Table:
    """Fig. 3b: success rate after each step 1..max_iter, for each eps."""
    n_eligible = int(records.eligible.sum())
    counts = records.fooled.sum(2)  # (E, max_iter)
    rows = [
        [eps, step + 1, n_eligible, int(counts[e, step]), _rate(int(counts[e, step]), n_eligible)]
        for e, eps in enumerate(records.eps)
        for step in range(counts.shape[1])
    ]
    return Table(["eps", "iteration", "n_eligible", "n_fooled", "success_rate"], rows)


def confidence_bins_table(records: StudyRecords, bins: ConfidenceBins) -> Table:
    """Fig. 3c: success rate after ``max_iter`` steps per clean-confidence bin, for each eps.

    ``n_eligible`` counts the eligible images whose clean confidence falls in the bin.
    """
    index = torch.where(records.eligible, bins.assign(records.clean_confidence), -1)
    edges = bins.edges().tolist()
    rows = []
    for e, eps in enumerate(records.eps):
        final = records.fooled[e, -1]
        for b in range(bins.n):
            in_bin = index == b
            n_eligible, n_fooled = int(in_bin.sum()), int(final[in_bin].sum())
            rows.append([eps, b, edges[b], edges[b + 1], n_eligible, n_fooled, _rate(n_fooled, n_eligible)])
    return Table(["eps", "bin", "conf_low", "conf_high", "n_eligible", "n_fooled", "success_rate"], rows)
