"""The adversarial-training cost benchmark (experiments/benchmarks/adversarial_training.py) at tiny
sizes: its costs come out finite and positive, its FLOP accounting matches the structure of the
attacks (PGD-7 is seven FGSM-sized gradient calls; an attack call is exactly two forwards, the
clean step three less the first convolution's input gradient), its attacks come from the configs,
and flags it cannot run are refused. No timed assertions: speed is the benchmark's report."""

from __future__ import annotations

import math
import sys
from types import ModuleType

import pytest
import torch
from omegaconf import OmegaConf

from advmed.attacks import FGSM, PGD
from tests.benchmarks.conftest import benchmark_scripts
from tests.conftest import CONFIG_DIR

SIZE, BATCH = 16, 2
TINY = ["--device", "cpu", "--threads", "1", "--arch", "resnet34", "--image-size", str(SIZE), "--batch", str(BATCH),
        "--batches", "2", "--steps", "1", "--repeats", "1", "--warmup-steps", "0", "--clock", "cpu"]


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    with benchmark_scripts("adversarial_training") as scripts:
        yield {"gan_rounds": scripts["gan_rounds"], "adv": scripts["adversarial_training"]}


def test_benchmark_prints_costs_against_the_clean_step(bench, capsys):
    figures = bench["adv"].main(TINY)
    assert set(figures["costs"]) == {"fgsm@1", "pgd-7@1"}
    for name, cost in figures["costs"].items():
        assert math.isfinite(cost) and cost > 0, (name, cost)
    assert math.isfinite(figures["clean_img_s"]) and figures["clean_img_s"] > 0
    assert set(figures["results"]) == {"clean", "fgsm@1", "pgd-7@1"}
    flops = figures["flop_costs"]
    # PGD-7 makes seven gradient calls where FGSM makes one, each the same work (random start: no FLOPs).
    assert flops["pgd-7@1"] - 1 == pytest.approx(7 * (flops["fgsm@1"] - 1), rel=1e-9)
    assert 1.5 < flops["fgsm@1"] < 2.0  # an input-gradient call is 2 forwards against the clean step's < 3
    # At the paper-style fraction 0.5 one of the two images is attacked: half the attack's share.
    for kind in ("fgsm", "pgd-7"):
        assert figures["paper_flop_costs"][kind] == pytest.approx(1 + 0.5 * (flops[f"{kind}@1"] - 1), rel=1e-12)
    work = figures["fgsm_work"]
    assert work["moved_buffers"] == [] and work["parameter_grads"] == [] and work["training_mode"] is True
    out = capsys.readouterr().out
    assert "[clean step]" in out
    assert "[fgsm step, adv_fraction 1]" in out and "target <= 1.85x" in out
    assert "[pgd-7 step, adv_fraction 1]" in out and "target <= 6.3x" in out
    assert "[attack work] one FGSM call = 2.00 forwards" in out and "as the attack contract says" in out
    assert "[paper-style configs]" in out and "model.adv_fraction=0.5" in out and "--adv-fraction 1 0.5" in out


def test_flops_of_an_attack_call_and_a_clean_step_by_hand(bench):
    """On a ResNet only convolutions and the head count: an input backward costs what the forward
    costs, layer by layer, so an attack call is exactly two forwards; a clean step is three forwards
    less the first convolution's input gradient (the images need none)."""
    adv = bench["adv"]
    gpu = sys.modules["gpu_throughput"]
    torch.manual_seed(0)
    module = adv.build_template("resnet34", SIZE)
    x, y = torch.rand(BATCH, 3, SIZE, SIZE), torch.tensor([0, 8])
    forward = gpu.forward_flops(module.net, x)
    assert adv.attack_work(module, FGSM(eps=0.03), x, y)["flops"] == 2 * forward
    conv1 = 2 * BATCH * 64 * (SIZE // 2) ** 2 * 3 * 7 * 7  # 7x7 stride-2 conv, 3 -> 64 channels
    assert gpu.training_step_flops(module, x, y) == 3 * forward - conv1


def test_attack_work_sees_a_model_left_changed(bench):
    """The check is not vacuous: a 'attack' that runs the model in train mode (moving batch-norm
    statistics) and back-propagates into the weights is reported."""
    adv = bench["adv"]
    torch.manual_seed(0)
    module = adv.build_template("resnet34", SIZE)
    x, y = torch.rand(BATCH, 3, SIZE, SIZE), torch.tensor([0, 8])

    def careless(model, x, y):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return x

    work = adv.attack_work(module, careless, x, y)
    assert "net.backbone.bn1.running_mean" in work["moved_buffers"]
    assert "net.backbone.fc.weight" in work["parameter_grads"]


def test_attacks_come_from_the_configs(bench):
    adv = bench["adv"]
    fgsm_cfg = OmegaConf.load(CONFIG_DIR / "attack" / "fgsm.yaml")
    pgd_cfg = OmegaConf.load(CONFIG_DIR / "attack" / "pgd.yaml")
    fgsm = adv.build_train_attack("fgsm", None, bf16=False, channels_last=False)
    assert isinstance(fgsm, FGSM) and fgsm.eps == pytest.approx(fgsm_cfg.eps) and fgsm.amp_dtype is None
    pgd = adv.build_train_attack("pgd-7", 0.05, bf16=True, channels_last=True)
    assert isinstance(pgd, PGD) and pgd.steps == 7 and pgd.eps == 0.05 and pgd.alpha == pytest.approx(2.5 * 0.05 / 7)
    assert pgd.random_start is pgd_cfg.random_start and pgd.early_stop is False
    assert pgd.amp_dtype == torch.bfloat16 and pgd.channels_last is True


def test_contestants_start_from_the_same_weights(bench):
    adv = bench["adv"]
    args = adv.parse_args([*TINY, "--adv-fraction", "0.5"])
    modules = adv.build_contestants(args)
    assert list(modules) == ["clean", "fgsm@0.5", "pgd-7@0.5"]
    clean = modules["clean"].state_dict()
    for name, module in modules.items():
        assert all(torch.equal(v, module.state_dict()[k]) for k, v in clean.items()), name
        assert module.hparams.adv_fraction == (0.0 if name == "clean" else float(name.split("@")[1]))


@pytest.mark.parametrize(("flags", "message"), [
    (["--adv-fraction", "0"], "--adv-fraction 0 must be in (0, 1]"),
    (["--adv-fraction", "1.5"], "--adv-fraction 1.5 must be in (0, 1]"),
    (["--adv-fraction", "0.5", "0.5"], "--adv-fraction 0.5 0.5 repeats a value"),
    (["--repeats", "0"], "--repeats 0 must be >= 1"),
])
def test_flags_it_cannot_run_are_refused(bench, capsys, flags, message):
    with pytest.raises(SystemExit):
        bench["adv"].parse_args(["--device", "cpu", *flags])
    assert message in capsys.readouterr().err
