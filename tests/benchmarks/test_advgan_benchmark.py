"""The AdvGAN speed benchmark (experiments/benchmarks/advgan.py) at tiny sizes: its figures come out
finite and positive, both contestants train the same networks from the same weights, its first
losses match hand-computed values, and settings the bare loop cannot reproduce are refused. No
timed assertions: speed is the benchmark's report, not a test."""

from __future__ import annotations

import copy
import math
from types import ModuleType

import pytest
import torch
from omegaconf import OmegaConf

from tests.benchmarks.conftest import benchmark_scripts
from tests.conftest import CONFIG_DIR

# 16 px tiles, a ResNet18 target, the narrowest networks that still have every layer type.
TINY = ["--device", "cpu", "--threads", "1", "--image-size", "16", "--batch", "2", "--classifier-arch", "resnet18",
        "--base-width", "4", "--residual-blocks", "1", "--critic-width", "4", "--critic-depth", "2", "--batches", "2",
        "--repeats", "1", "--warmup-iterations", "0"]
TERMS = {"d_real", "d_fake", "g_nce", "g_gan", "g_threshold"}


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    with benchmark_scripts("advgan") as scripts:
        yield scripts


def _tiny(bench, *extra: str):
    """(args, template, loader) at the tiny settings, the template built from seed 0."""
    adv, rounds = bench["advgan"], bench["gan_rounds"]
    args = adv.parse_args([*TINY, *extra])
    torch.manual_seed(0)
    template = adv.build_template(args)
    loader = rounds.random_image_loader(2 * args.batch, args.image_size, adv.NUM_CLASSES, args.batch, pin=False)
    return args, template, loader


def test_advgan_benchmark_trains_the_same_networks(bench, capsys):
    # thr 1e-4: the noise outgrows it after one generator step, so the threshold term is live at the last iteration.
    figures = bench["advgan"].main([*TINY, "--iterations", "2", "--thr", "1e-4", "--clock", "cpu"])
    for key in ("ours_img_s", "bare_img_s", "ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    assert math.isfinite(figures["ours_fit_overhead_s"]) and figures["ours_fit_overhead_s"] >= 0
    assert set(figures["results"]) == {"ours", "bare"}  # no bf16 contestant on a CPU by default
    for rounds in figures["results"].values():
        assert [r.iterations for r in rounds] == [2]
        assert all(r.seconds > 0 and r.peak_bytes is None for r in rounds)
    ours, bare = figures["results"]["ours"][0], figures["results"]["bare"][0]
    for losses in (ours.first_losses, bare.first_losses, ours.last_losses, bare.last_losses):
        assert set(losses) == TERMS
    for name in TERMS:  # same weights and batches, no random draws: the same numbers
        assert ours.first_losses[name] == pytest.approx(bare.first_losses[name], rel=1e-6, abs=0)
        assert ours.last_losses[name] == pytest.approx(bare.last_losses[name], rel=1e-6, abs=0)
    assert bare.first_losses["g_threshold"] == 0.0  # the generator starts as the identity attack
    assert bare.last_losses["g_threshold"] > 0.0
    assert ours.fingerprint == pytest.approx(bare.fingerprint, rel=1e-9)
    assert figures["same_training"] is True
    out = capsys.readouterr().out
    assert "[advgan fp32]" in out and "ratio ours/bare" in out and "target resnet18 (random weights" in out
    assert "[advgan peak memory] n/a on CPU" in out and "cpu clock" in out
    assert "68,000 iterations x 16 = 1,088,000 images" in out
    assert "GPU available" not in out  # the Trainer's banner is silenced


def test_first_iteration_losses_match_hand_computed_values(bench):
    """At the first iteration G(x) = 0 (zero-initialised last layer), so x_adv = x: eq. 1's terms are
    those of the discriminator's logits on the clean batch, and l_nce = gamma / CE of the classifier
    on it (eqs. 7-8), here recomputed in float64 from the softmax probabilities."""
    adv = bench["advgan"]
    _, template, loader = _tiny(bench)
    x, y = next(iter(loader))
    with torch.no_grad():
        d_logits = template.critic(x).double()
        probs = template.classifier(x).double().softmax(1)
    expected = {
        "d_real": -torch.log(torch.sigmoid(d_logits)).mean(),
        "d_fake": -torch.log(1.0 - torch.sigmoid(d_logits)).mean(),
        "g_nce": 10.0 / (-torch.log(probs[torch.arange(len(y)), y]).mean() + 1e-6),
    }
    first = adv.bare_round(template, loader, 1, torch.device("cpu"), seed=0).first_losses
    for name, value in expected.items():
        assert first[name] == pytest.approx(float(value), rel=1e-5), name
    assert first["g_threshold"] == 0.0


def test_same_training_detects_different_generator_weights(bench):
    """The agreement check is not vacuous: a bare loop whose generator starts from other inner weights
    computes the same first losses (its output layer is still zero) but not the same training."""
    adv, rounds = bench["advgan"], bench["gan_rounds"]
    _, template, loader = _tiny(bench)
    cpu = torch.device("cpu")
    ours = adv.ours_round(template, loader, 2, cpu, "32-true", seed=0)
    assert rounds.same_training(ours, adv.bare_round(template, loader, 2, cpu, seed=0))
    other = copy.deepcopy(template)
    with torch.no_grad():
        other.generator.encoder[0][0].weight.mul_(-1.0)
    different = adv.bare_round(other, loader, 2, cpu, seed=0)
    assert rounds.losses_agree(ours.first_losses, different.first_losses)
    assert not rounds.same_training(ours, different)


def test_model_settings_come_from_the_config_with_flag_overrides(bench):
    adv = bench["advgan"]
    config = OmegaConf.load(CONFIG_DIR / "model" / "advgan.yaml")
    defaults = adv.parse_args([]).model
    assert (defaults["base_width"], defaults["depth"], defaults["critic_depth"]) == (
        config.base_width, config.depth, config.critic_depth)
    assert defaults["generator_optimizer"]["lr"] == config.generator_optimizer.lr
    assert not set(adv.BENCHMARK_KEYS) & set(defaults)  # the data's interpolations are the benchmark's to set
    args = adv.parse_args(["--base-width", "4", "--thr", "0.05", "--image-size", "32"])
    assert (args.model["base_width"], args.model["thr"], args.model["depth"]) == (4, 0.05, config.depth)
    assert (args.image_size, args.batch, args.classifier_arch) == (32, 16, "resnet34")


@pytest.mark.parametrize(("size", "message"), [
    ("30", "--image-size 30 must be a multiple of 4 (generator depth 2)"),
    ("8", "--image-size 8 must be a multiple of 4 (generator depth 2) and at least 16"),
])
def test_image_sizes_the_networks_cannot_take_are_refused(bench, capsys, size, message):
    with pytest.raises(SystemExit):
        bench["advgan"].parse_args(["--image-size", size])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value"), [("n_critic", 5), ("ema_decay", 0.999), ("gradient_clip_val", 1.0),
                                            ("accumulate_grad_batches", 2)])
def test_a_schedule_the_bare_loop_does_not_write_is_refused(bench, key, value):
    hparams = {"n_critic": 1, "accumulate_grad_batches": 1, "gradient_clip_val": None, "ema_decay": None}
    bench["gan_rounds"].check_plain_schedule({**hparams, "gradient_clip_val": 0})  # 0: no clipping, accepted
    with pytest.raises(ValueError, match=f"model.{key}={value}: the bare loop writes one critic"):
        bench["gan_rounds"].check_plain_schedule({**hparams, key: value})


def test_bare_adam_follows_the_module_config(bench):
    adam = bench["gan_rounds"].adam_from_config
    param = [torch.zeros(1, requires_grad=True)]
    configured = adam(param, {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.5, 0.999], "eps": None})
    assert configured.defaults["lr"] == 1e-3 and configured.defaults["betas"] == (0.5, 0.999)
    assert configured.defaults["eps"] == 1e-8  # a null key falls back to torch's default, as in the module
    default = adam(param, None)  # the GAN base's DCGAN Adam
    assert default.defaults["lr"] == 2e-4 and default.defaults["betas"] == (0.5, 0.999)
    with pytest.raises(ValueError, match="bare loop builds torch.optim.Adam.*'torch.optim.SGD'"):
        adam(param, {"_target_": "torch.optim.SGD", "lr": 0.1})
