"""The strong-attacks speed benchmark (experiments/benchmarks/strong_attacks.py) at --quick sizes: every
contest runs and reports finite, positive times; the pass counts follow from the attacks' structure
(APGD-CE: a clean forward, then a forward and a backward at the start and after each iteration; FAB-T:
a clean forward, then per iteration a forward and backward for the boundary and a forward for the
prediction) and torchattacks is given the same iterations; the counter sees backward passes of any
kind; its demo constants match the demo's configs. No timed assertions: speed is the report."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tests.benchmarks.conftest import benchmark_scripts
from tests.conftest import CONFIG_DIR

QUICK = ["--quick", "--device", "cpu", "--threads", "1", "--clock", "cpu"]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    with benchmark_scripts("strong_attacks") as scripts:
        yield scripts["strong_attacks"]


@pytest.fixture(scope="module")
def quick_run(bench) -> tuple[dict, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        figures = bench.main(QUICK)
    return figures, out.getvalue()


def test_every_contest_reports_times_and_the_threads(bench, quick_run):
    figures, out = quick_run
    assert figures["threads"] == 1 and "1 torch threads" in out
    assert "RANDOM weights (no --ckpt" in out  # said when the trained demo model is not used
    assert set(figures["contests"]) == {"apgd-ce", "autoattack", "fab-t", "square"}
    for tag, c in figures["contests"].items():
        for side in (bench.OURS, bench.THEIRS):
            assert len(c.seconds[side]) == 1 and all(s > 0 for s in c.seconds[side]), tag
            assert c.outputs[side].shape == (2, 3, 32, 32)
        assert math.isfinite(c.ratio()) and c.ratio() > 0
        assert c.same_passes_every_round  # both libraries seeded
        assert f"[{tag}] ours" in out and "ratio torchattacks/ours" in out and f"[{tag} passes]" in out
    assert math.isfinite(figures["autoattack_s_per_image"]) and figures["autoattack_s_per_image"] > 0
    for name in ("apgd-ce", "apgd-t", "fab-t", "square", "ensemble"):
        assert f"[autoattack per attack, last round] {name}:" in out


def test_apgd_ce_passes_are_steps_plus_one_per_attacked_image(bench, quick_run):
    figures, out = quick_run
    steps, batch, correct = figures["steps"], figures["batch"], figures["correct"]
    assert (steps, batch, correct) == (3, 2, 2)  # random weights: labels are the clean predictions
    alone = figures["contests"]["apgd-ce"].passes
    for side in (bench.OURS, bench.THEIRS):
        p = alone[side]["apgd-ce"]
        assert (p.forward_calls, p.forward_rows) == (1 + steps + 1, batch + (steps + 1) * correct)
        assert (p.backward_calls, p.backward_rows) == (steps + 1, (steps + 1) * correct)
    assert figures["checks"]["apgd-ce"] == {bench.OURS: True, bench.THEIRS: True}
    assert "[pass check] apgd-ce alone" in out and "ours True, torchattacks True; same work both sides True" in out
    # Inside the ensembles: torchattacks' AutoAttack was given our 3 steps, not its default 10; ours lets
    # a fooled image leave APGD (early stop), so it makes at most as many passes, with the same outcome.
    assert figures["checks"]["autoattack apgd-ce"][bench.THEIRS] is True
    ensemble = figures["contests"]["autoattack"].passes
    assert ensemble[bench.THEIRS]["apgd-ce"].backward_rows == 4 * 2
    assert 2 <= ensemble[bench.OURS]["apgd-ce"].backward_rows <= 4 * 2  # at least the start of both images
    assert figures["robust_accuracy"]["autoattack"][bench.OURS] == figures["robust_accuracy"]["autoattack"][bench.THEIRS]


def test_full_runs_give_torchattacks_work_inside_autoattack(bench):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as out:
        figures = bench.main([*QUICK, "--only", "autoattack", "--aa-full-runs"])
    assert figures["checks"]["autoattack apgd-ce"] == {bench.OURS: True, bench.THEIRS: True}
    ensemble = figures["contests"]["autoattack"].passes
    assert ensemble[bench.OURS]["apgd-ce"].backward_rows == ensemble[bench.THEIRS]["apgd-ce"].backward_rows == 4 * 2
    assert "no early stop (--aa-full-runs)" in out.getvalue()


def test_ensemble_passes_add_up(bench, quick_run):
    figures, _ = quick_run
    for side, passes in figures["contests"]["autoattack"].passes.items():
        whole = bench.total(passes)
        assert whole.forward_rows == sum(p.forward_rows for p in passes.values())
        assert set(passes) <= {"apgd-ce", "apgd-t", "fab-t", "square", "ensemble"}, side
        assert passes["ensemble"].backward_calls == 0  # the ensembles' own checks take no gradient
        assert all(p.forward_calls > 0 for p in passes.values())


def test_fab_t_and_square_passes(bench, quick_run):
    figures, _ = quick_run
    steps = figures["steps"]
    fab = figures["contests"]["fab-t"].passes
    assert figures["fab_wrote_parameter_grads"] is True  # torchattacks 3.5.1's FAB calls .backward()
    ours = fab[bench.OURS]["fab-t"]
    # Ours: one clean forward; each run of a target: per iteration a gradient pass and a prediction.
    assert ours.backward_calls % steps == 0 and ours.backward_calls >= steps
    assert ours.forward_calls == 1 + 2 * ours.backward_calls
    assert fab[bench.THEIRS]["fab-t"].backward_calls % steps == 0  # torchattacks given the same iterations
    square = figures["contests"]["square"].passes
    for side in (bench.OURS, bench.THEIRS):
        assert square[side]["square"].backward_calls == 0  # black-box: no gradient
    # The budget: ours counts its start in the 20 queries, torchattacks is given 19 updates after its
    # start; beside them each side predicts the clean images once, and torchattacks its result once more.
    # An image once broken is queried no more, so the budget is the most each side spends.
    budget = figures["batch"] * (1 + 20)
    ours, theirs = square[bench.OURS]["square"].forward_rows, square[bench.THEIRS]["square"].forward_rows
    assert ours <= budget and theirs <= budget + figures["batch"]
    if figures["robust_accuracy"]["square"] == {bench.OURS: 100.0, bench.THEIRS: 100.0}:
        assert (ours, theirs) == (budget, budget + figures["batch"])  # nothing broken: all spent


def test_counter_sees_backward_and_retained_graph_passes(bench):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    counter = bench.PassCounter(net, clock=lambda: 0.0)
    x = torch.rand(5, 4, requires_grad=True)
    counter.within(lambda: torch.autograd.grad(net(x).sum(), x), "a")()
    out = counter.within(net, "b")(x)
    for j in range(3):  # FAB's pattern: one backward per logit through one retained graph
        out[:, j].sum().backward(retain_graph=j < 2)
    with torch.no_grad():
        counter.within(net, "b")(x)
    passes = counter.take()
    assert (passes["a"].forward_rows, passes["a"].backward_calls, passes["a"].backward_rows) == (5, 1, 5)
    assert (passes["b"].forward_calls, passes["b"].backward_calls, passes["b"].backward_rows) == (2, 3, 15)
    assert counter.take() == {}
    counter.remove()
    net(x)
    assert counter.passes == {}


def test_demo_constants_match_the_demo_configs(bench):
    demo = OmegaConf.load(CONFIG_DIR / "experiment" / "demo.yaml")
    overrides = {k: v for entry in demo.defaults if isinstance(entry, dict) or OmegaConf.is_dict(entry)
                 for k, v in entry.items()}
    assert overrides["override /model"] == "resnet34" == bench.DEMO_ARCH
    data = OmegaConf.load(CONFIG_DIR / "data" / f"{overrides['override /data']}.yaml")
    assert (data.image_size, data.num_classes) == (bench.DEMO_IMAGE_SIZE, bench.DEMO_NUM_CLASSES)


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "0"], "--steps 0 must be >= 1"),
    (["--n-queries", "1"], "--n-queries 1 must be >= 2"),
    (["--quick", "--ckpt", "x.ckpt"], "--quick runs 32 px random weights: drop --ckpt"),
    (["--ckpt", "x.ckpt", "--image-size", "32"], "--image-size is for random weights"),
    (["--device", "cpu", "--eps", "2"], "--eps 2.0 must be in (0, 1]"),
])
def test_bad_flags_are_refused(bench, capsys, flags, message):
    with pytest.raises(SystemExit):
        bench.parse_args(flags)
    assert message in capsys.readouterr().err
