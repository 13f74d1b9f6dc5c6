"""The StyleGAN2 and SRGAN speed benchmarks (experiments/benchmarks/{stylegan2,srgan}.py) at tiny
sizes: their figures come out finite and positive, and both contestants train the same networks
from the same weights. No timed assertions: speed is the benchmarks' report, not a test."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch

from tests.benchmarks.conftest import benchmark_scripts

STYLEGAN2_TINY = ["--device", "cpu", "--threads", "1", "--image-size", "16", "--batch", "4", "--channel-base", "64", "--channel-max", "16",
                  "--z-dim", "8", "--mapping-layers", "2", "--batches", "2", "--repeats", "1", "--warmup-iterations", "0"]
SRGAN_TINY = ["--device", "cpu", "--threads", "1", "--tile-size", "40", "--hr-size", "32", "--lr-size", "16", "--batch", "2",
              "--num-blocks", "1", "--channels", "4", "--critic-width", "4", "--vgg-layer", "relu2_2", "--batches", "2",
              "--repeats", "1", "--warmup-iterations", "0"]


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    with benchmark_scripts("stylegan2", "srgan") as scripts:
        yield scripts


def _check_figures(figures: dict, iterations: int) -> None:
    for key in ("ours_img_s", "bare_img_s", "ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    assert math.isfinite(figures["ours_fit_overhead_s"]) and figures["ours_fit_overhead_s"] >= 0
    for rounds in figures["results"].values():
        assert [r.iterations for r in rounds] == [iterations]
        assert all(r.seconds > 0 and r.peak_bytes is None for r in rounds)  # no CUDA peak on a CPU


# --------------------------------------------------------------------------- StyleGAN2


def test_stylegan2_benchmark_trains_the_same_networks(bench, capsys):
    # 5 iterations: R1 at critic step 0, path length at generator steps 0 and 4 (the last).
    figures = bench["stylegan2"].main([*STYLEGAN2_TINY, "--iterations", "5"])
    _check_figures(figures, 5)
    ours, bare = figures["results"]["ours"][0], figures["results"]["bare"][0]
    terms = {"d_real", "d_fake", "d_r1", "g_adversarial", "g_path_length"}
    assert set(ours.first_losses) == set(bare.first_losses) == terms
    for name in terms:  # same weights, batch and seed: the same numbers, not just close ones
        assert ours.first_losses[name] == pytest.approx(bare.first_losses[name], rel=1e-6, abs=0)
        assert math.isfinite(bare.first_losses[name])
    assert set(bare.last_losses) == {"d_real", "d_fake", "g_adversarial", "g_path_length"}
    assert ours.fingerprint == pytest.approx(bare.fingerprint, rel=1e-9)
    assert figures["same_training"] is True
    out = capsys.readouterr().out
    assert "[stylegan2 fp32]" in out and "ratio ours/bare" in out and "s/kimg" in out
    assert "[stylegan2 peak memory] n/a on CPU" in out
    assert "7 d 21 h" in out and "= 76 s/kimg" in out  # the paper's 8960 kimg in 680,400 s
    assert "GPU available" not in out  # the Trainer's banner is silenced


def test_same_training_detects_a_different_start(bench):
    """The agreement check is not vacuous: a bare loop seeded differently (other latents and noise
    from the first batch on) does not pass it."""
    sg, rounds = bench["stylegan2"], bench["gan_rounds"]
    args = sg.parse_args(STYLEGAN2_TINY)
    template = sg.build_template(args)
    loader = rounds.random_image_loader(8, 16, sg.NUM_CLASSES, 4, pin=False)
    cpu = torch.device("cpu")
    ours = sg.ours_round(template, loader, 1, cpu, "32-true", seed=0)
    assert rounds.same_training(ours, sg.bare_round(template, loader, 1, cpu, seed=0))
    assert not rounds.same_training(ours, sg.bare_round(template, loader, 1, cpu, seed=1))


def test_optimizer_steps_count_the_lazy_regularizer_steps(bench):
    steps = bench["stylegan2"].optimizer_steps
    assert steps(1, 16, 4) == 2 + 1 + 1  # step 0 runs both regularisers
    assert steps(5, 16, 4) == 10 + 1 + 2  # R1 at 0; path length at 0 and 4
    assert steps(17, 16, 4) == 34 + 2 + 5  # R1 at 0, 16; path length at 0, 4, 8, 12, 16
    assert steps(7, None, 0) == 14


def test_ema_beta_ramps_up_as_stylegan2_ada(bench):
    beta = bench["stylegan2"].ema_beta
    assert beta(0.999, 0.05, 0) == 0.0  # the first update copies
    assert beta(0.999, 0.05, 10) == pytest.approx(0.25)  # half-life 0.05 * 10 = 0.5 steps: 0.5 ** 2
    assert beta(0.9, 0.05, 10_000) == 0.9  # ramped past the decay: capped
    assert beta(0.9, None, 0) == 0.9


def test_a_fit_that_runs_other_than_the_asked_iterations_is_refused(bench):
    sg, rounds = bench["stylegan2"], bench["gan_rounds"]
    template = sg.build_template(sg.parse_args(STYLEGAN2_TINY))
    loader = rounds.random_image_loader(8, 16, sg.NUM_CLASSES, 4, pin=False)
    # 4 optimiser steps are one iteration (critic, R1, generator, path length), not two.
    with pytest.raises(RuntimeError, match="ran 1 iterations, not 2.*max_steps=4"):
        rounds.lightning_round(template, loader, 2, 4, torch.device("cpu"), "32-true", sg.LOSS_NAMES,
                               counted=lambda m: m.critic_steps, seed=0)


# --------------------------------------------------------------------------- SRGAN


def test_srgan_benchmark_trains_the_same_networks(bench, capsys):
    figures = bench["srgan"].main([*SRGAN_TINY, "--iterations", "2", "--clock", "cpu"])
    _check_figures(figures, 2)
    ours, bare = figures["results"]["ours"][0], figures["results"]["bare"][0]
    terms = {"d_real", "d_fake", "g_content", "g_adversarial"}  # the VGG term, not the pixel fallback
    for losses in (ours.first_losses, bare.first_losses, ours.last_losses, bare.last_losses):
        assert set(losses) == terms
    for name in terms:
        assert ours.first_losses[name] == pytest.approx(bare.first_losses[name], rel=1e-6, abs=0)
        assert ours.last_losses[name] == pytest.approx(bare.last_losses[name], rel=1e-6, abs=0)
    assert bare.first_losses["g_content"] > 0
    assert ours.fingerprint == pytest.approx(bare.fingerprint, rel=1e-9)
    assert figures["same_training"] is True
    out = capsys.readouterr().out
    assert "[srgan fp32]" in out and "ratio ours/bare" in out and "VGG19 relu2_2 (random weights)" in out
    assert "cpu clock" in out


def test_bare_srgan_loop_refuses_an_optimizer_it_does_not_build(bench):
    with pytest.raises(ValueError, match="bare loop builds Adam.*torch.optim.SGD"):
        bench["srgan"]._adam([torch.zeros(1, requires_grad=True)], {"_target_": "torch.optim.SGD", "lr": 0.1})


def test_srgan_sizes_that_make_no_pair_are_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench["srgan"].parse_args(["--hr-size", "30", "--lr-size", "16"])
    assert "--hr-size 30 must be a multiple of --lr-size 16" in capsys.readouterr().err


# --------------------------------------------------------------------------- shared bookkeeping


def test_throughput_figures_from_hand_made_rounds(bench):
    rounds = bench["gan_rounds"]
    ours = [rounds.RoundResult(2.0, 10, None, round_seconds=2.5), rounds.RoundResult(4.0, 10, None, round_seconds=4.1)]
    bare = [rounds.RoundResult(1.0, 10, None), rounds.RoundResult(3.0, 10, None)]
    assert rounds.images_per_s(ours, batch=8) == 10 * 8 / 2.0  # the best round
    assert rounds.throughput_ratio(ours, bare) == pytest.approx((1 / 2 + 3 / 4) / 2)  # median of bare / ours
    assert rounds.fit_overhead(ours) == pytest.approx((0.5 + 0.1) / 2)


def test_losses_agree_over_the_bare_loops_terms(bench):
    agree = bench["gan_rounds"].losses_agree
    assert agree({"a": 1.0, "stale": 5.0}, {"a": 1.0})  # a regulariser's value left from an earlier step
    assert not agree({"a": 1.0}, {"a": 1.001})
    assert not agree({"a": 1.0}, {"a": 1.0, "b": 2.0})
    assert not agree({"a": 1.0}, {})  # nothing recorded is no evidence


def test_clocks_other_than_wall_and_cpu_time_are_refused(bench):
    use_clock = bench["gan_rounds"].use_clock
    with pytest.raises(ValueError, match="--clock 'gpu' must be one of"):
        use_clock("gpu", torch.device("cpu"))
    with pytest.raises(ValueError, match="leave out the cuda device's work: use --clock wall"):
        use_clock("cpu", torch.device("cuda"))


def test_too_few_images_for_one_batch_are_refused(bench):
    with pytest.raises(ValueError, match="3 images, fewer than --batch 4: raise --batches"):
        bench["gan_rounds"].random_image_loader(3, 16, 9, 4, pin=False)
