"""The objectives' step-cost benchmark (experiments/benchmarks/objectives.py) at tiny sizes: its table has a
row per objective with finite, positive figures, the passes it counts with hooks are those each objective
implies (PGD-k: k + 1, ...), every contestant starts from the same weights and trains what it says, and
flags it cannot run are refused. No timed assertions: speed is the benchmark's report."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch

from advmed.attacks import FGSM, PGD
from advmed.objectives import FGSMRS, MART, PGDAT, TRADES, Mixed, Standard
from tests.benchmarks.conftest import benchmark_scripts

K = 2
TINY = ["--device", "cpu", "--threads", "1", "--arch", "resnet18", "--image-size", "16", "--batch", "4", "--steps", "1",
        "--repeats", "1", "--warmup-steps", "0", "--pgd-steps", str(K), "--clock", "cpu"]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    with benchmark_scripts("objectives") as scripts:
        yield scripts["objectives"]


def test_the_table_has_every_objective_with_its_implied_and_counted_passes(bench, capsys):
    figures = bench.main(TINY)
    rows = {row["objective"]: row for row in figures["rows"]}
    assert list(rows) == ["standard", "mixed", "pgd_at", "trades", "mart", "fgsm_rs"]
    implied = {name: (row["implied"].forwards, row["implied"].backwards) for name, row in rows.items()}
    assert implied == {"standard": (1, 1), "mixed": (1.5, 1.5), "pgd_at": (K + 1, K + 1), "trades": (K + 3, K + 2),
                       "mart": (K + 2, K + 2), "fgsm_rs": (2, 2)}
    for name, row in rows.items():
        assert row["counted"].matches(row["implied"]), (name, row["counted"])  # what the step really ran
        for key in ("ms_per_step", "ratio", "ratio_min", "ratio_max", "efficiency"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key, row[key])
        assert row["efficiency"] == pytest.approx(row["ratio"] / row["implied"].work)
    assert rows["standard"]["ratio"] == 1.0 and figures["passes_agree"] is True
    out = capsys.readouterr().out
    assert "| objective | passes implied (fwd+bwd) | counted fwd / bwd | ms/step (best round) |" in out
    assert f"| pgd_at | {K + 1} ({K + 1}) | {K + 1} / {K + 1} |" in out
    assert f"| trades | {K + 2} + 1 fwd ({(K + 3 + 2 * (K + 2)) / 3:.3g}) | {K + 3} / {K + 2} |" in out
    assert "[passes] counted by hooks on the network = implied by the objectives' definitions, every objective: True" in out


def test_the_pass_count_sees_what_a_step_runs(bench):
    """Not vacuous: the count follows the inner steps and the attacked share of the batch."""
    args = bench.parse_args([*TINY, "--pgd-steps", "3", "--batch", "3", "--fraction", "0.34"])
    modules = bench.build_contestants(args, torch.device("cpu"))
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    assert bench.count_passes(modules["pgd_at"], x, y) == bench.Passes(4, 4)
    assert bench.count_passes(modules["mixed"], x, y).matches(bench.Passes(4 / 3, 4 / 3))  # round(0.34 * 3) = 1 image
    assert bench.attacked_share(0.34, 3) == pytest.approx(1 / 3) and bench.attacked_share(0.5, 3) == pytest.approx(2 / 3)


def test_contestants_start_from_the_same_weights_and_train_their_objective(bench):
    args = bench.parse_args(TINY)
    modules = bench.build_contestants(args, torch.device("cpu"))
    kinds = {name: (type(m.objective), type(m.train_attack)) for name, m in modules.items()}
    assert kinds == {"standard": (Standard, type(None)), "mixed": (Mixed, FGSM), "pgd_at": (PGDAT, PGD),
                     "trades": (TRADES, type(None)), "mart": (MART, PGD), "fgsm_rs": (FGSMRS, type(None))}
    assert modules["pgd_at"].train_attack.steps == modules["mart"].train_attack.steps == modules["trades"].objective.steps == K
    reference = modules["standard"].state_dict()
    for name, module in modules.items():
        assert all(torch.equal(v, module.state_dict()[k]) for k, v in reference.items()), name
    before = {k: v.clone() for k, v in modules["trades"].state_dict().items()}
    optimizer = bench.make_optimizer(modules["trades"])
    loss = bench.training_step(modules["trades"], optimizer, torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss) and not torch.equal(before["net.backbone.fc.weight"],
                                                    modules["trades"].state_dict()["net.backbone.fc.weight"])


@pytest.mark.parametrize(("flags", "message"), [
    (["--pgd-steps", "0"], "--pgd-steps 0 must be >= 1"),
    (["--fraction", "0"], "--fraction 0 must be in (0, 1]"),
    (["--eps", "8"], "--eps 8 must be in [0, 1]"),
    (["--repeats", "0"], "--repeats 0 must be >= 1"),
    (["--warmup-steps", "-1"], "--warmup-steps -1 must be >= 0"),
])
def test_flags_it_cannot_run_are_refused(bench, capsys, flags, message):
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", *flags])
    assert message in capsys.readouterr().err
