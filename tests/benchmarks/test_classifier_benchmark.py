"""The classifier speed benchmark (experiments/benchmarks/classifier.py) at tiny sizes: its figures come
out finite and positive, ours and the bare loop train the same network from the same weights, the
check of that is not vacuous, and flags no round can run are refused. No timed assertions: speed is
the benchmark's report, not a test."""

from __future__ import annotations

import copy
import math
from types import ModuleType

import pytest
import torch

from tests.benchmarks.conftest import benchmark_scripts
from tests.conftest import CONFIG_DIR

# ResNet34 (the smallest arch the benchmark offers) on 16 px tiles: seconds on a CPU.
TINY = ["--device", "cpu", "--threads", "1", "--arch", "resnet34", "--image-size", "16", "--batch", "2",
        "--batches", "2", "--repeats", "1", "--warmup-steps", "0"]


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    with benchmark_scripts("classifier") as scripts:
        yield scripts


def test_classifier_benchmark_trains_the_same_network(bench, capsys):
    figures = bench["classifier"].main([*TINY, "--steps", "2", "--clock", "cpu"])
    for key in ("ours_img_s", "bare_img_s", "ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    assert set(figures["results"]) == {"ours", "bare"}
    ours, bare = figures["results"]["ours"][0], figures["results"]["bare"][0]
    assert ours.iterations == bare.iterations == 2 and ours.seconds > 0 and bare.seconds > 0
    # Same weights, batches and arithmetic on a CPU: the same numbers, not just close ones.
    assert ours.first_losses["loss"] == pytest.approx(bare.first_losses["loss"], rel=1e-6, abs=0)
    assert ours.last_losses["loss"] == pytest.approx(bare.last_losses["loss"], rel=1e-6, abs=0)
    assert ours.last_losses["loss"] != ours.first_losses["loss"]  # the last step is another step's loss
    assert ours.fingerprint == pytest.approx(bare.fingerprint, rel=1e-9)
    assert figures["same_training"] is True
    out = capsys.readouterr().out
    assert "[classifier train step] ours (Lightning)" in out and "ratio ours/bare" in out and "target >= 0.95" in out
    assert "AdamW lr 0.001 (conf/model/resnet34.yaml)" in out and "cpu clock" in out
    assert "[classifier same training]" in out and "agree: True" in out
    assert "GPU available" not in out  # the Trainer's banner is silenced


def test_same_training_detects_different_weights(bench):
    """The agreement check is not vacuous: a bare loop whose network starts from other head weights
    does not pass it."""
    cls, rounds = bench["classifier"], bench["gan_rounds"]
    torch.manual_seed(0)
    template = cls.build_template("resnet34", 16)
    loader = rounds.random_image_loader(4, 16, cls.NUM_CLASSES, 2, pin=False)
    cpu = torch.device("cpu")
    ours = cls.ours_round(template, loader, 1, cpu, bf16=False)
    assert rounds.same_training(ours, cls.bare_round(template, loader, 1, cpu, bf16=False))
    other = copy.deepcopy(template)
    with torch.no_grad():
        other.net.backbone.fc.weight.mul_(-1.0)
    assert not rounds.same_training(ours, cls.bare_round(other, loader, 1, cpu, bf16=False))


def test_the_optimizer_comes_from_the_model_config(bench):
    from omegaconf import OmegaConf

    cls = bench["classifier"]
    for arch in cls.ARCHS:
        configured = OmegaConf.load(CONFIG_DIR / "model" / f"{arch}.yaml").optimizer
        assert cls.configured_optimizer(arch) == OmegaConf.to_container(configured)
    template = cls.build_template("resnet34", 16, channels_last=True)
    assert template.hparams.scheduler is None and template.hparams.channels_last is True
    assert template.hparams.optimizer["_target_"] == "torch.optim.AdamW"


def test_an_arch_without_a_model_config_is_refused(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no model config {tmp_path}/resnet34.yaml for --arch resnet34"):
        bench["classifier"].configured_optimizer("resnet34", tmp_path)


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "0"], "--steps 0 must be >= 1"),
    (["--image-size", "0"], "--image-size 0 must be >= 1"),
    (["--warmup-steps", "-1"], "--warmup-steps -1 must be >= 0"),
    (["--arch", "resnet18"], "invalid choice: 'resnet18'"),
])
def test_flags_no_round_can_run_are_refused(bench, capsys, flags, message):
    with pytest.raises(SystemExit):
        bench["classifier"].parse_args(["--device", "cpu", *flags])
    assert message in capsys.readouterr().err


def test_cuda_without_a_cuda_device_is_refused(bench, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench["classifier"].parse_args(["--device", "cuda"])
    assert "--device cuda but torch finds no CUDA device: use --device cpu" in capsys.readouterr().err
