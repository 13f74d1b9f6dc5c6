"""AdvGANAttack: a trained AdvGAN generator applied from its checkpoint to any classifier (DESIGN
contract 2) — directly, through `advmed.evaluate` / `advmed.augment` (`attack=advgan`) and as a training
attack (`attack@train_attack=advgan`) — and the checkpoints and images it refuses."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from advmed.attacks import AdvGANAttack, build_attack
from advmed.data.writers import OutputDirError
from advmed.models.checkpoint import load_module
from advmed.nets.advgan import apply_perturbation
from advmed.utils.files import file_sha256
from tests.entrypoints.conftest import compose_config
from tests.models.advgan_toy import train_advgan
from tests.models.classifier_toy import SIZE, data, train_classifier
from tests.shared_artifacts import build_once, cached_in_worker

# The toy data as config overrides (tests/models/classifier_toy.py: 16 px, 2 test tiles per class).
DATA = [f"data.image_size={SIZE}", "data.train_per_class=8", "data.val_per_class=2", "data.test_per_class=2",
        "data.batch_size=36", "data.augment.enabled=false"]


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    return build_once(tmp_path_factory, "advgan_toy_classifier", train_classifier)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, classifier_ckpt):
    """The AdvGAN of tests/models/test_advgan_module.py (trained once per session)."""
    return cached_in_worker(tmp_path_factory, "advgan_toy", lambda root: train_advgan(root, classifier_ckpt, 8))


@pytest.fixture(scope="module")
def batch():
    datamodule = data()
    datamodule.setup("test")
    return next(iter(datamodule.test_dataloader()))


class Untouchable(nn.Module):
    """A model that fails when called: the attack must not query the model it is given."""

    def forward(self, x):
        raise AssertionError("the AdvGAN attack queried the model under attack")


def test_it_applies_the_trained_generator_without_querying_the_model(trained, batch):
    module, _, ckpt = trained
    x, y = batch
    attack = AdvGANAttack(str(ckpt))
    result = attack.run(Untouchable(), x, y)
    with torch.no_grad():
        expected = apply_perturbation(x, module.generator.eval()(x))
    assert torch.allclose(result.x_adv, expected, atol=1e-6) and not torch.equal(result.x_adv, x)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert 0.0 <= float(result.x_adv.min()) and float(result.x_adv.max()) <= 1.0
    assert torch.allclose(result.stats["mean_abs_noise"], (result.x_adv - x).abs().mean(dim=(1, 2, 3)))
    assert set(result.stats) == {"mean_abs_noise"}  # L-inf and L2 are measured by the callers for every attack
    assert attack.norm == "generative" and attack.eps == 1.0 and not attack.targeted


def test_it_fools_the_classifier_it_was_trained_against(trained, classifier_ckpt, batch):
    _, m, ckpt = trained
    classifier = load_module(classifier_ckpt)
    x, y = batch
    x_adv = AdvGANAttack(str(ckpt))(classifier, x, y)
    with torch.no_grad():
        clean, adv = classifier(x).argmax(1), classifier(x_adv).argmax(1)
    # The same test split as the module's own test: the same accuracies.
    assert float((clean == y).float().mean()) == pytest.approx(m["test/acc"])
    assert float((adv == y).float().mean()) == pytest.approx(m["test/adv_acc"])
    assert all(p.grad is None for p in classifier.parameters())


def test_the_ema_generator_is_the_one_applied_when_kept(tmp_path, classifier_ckpt, batch):
    module, _, ckpt = train_advgan(tmp_path, classifier_ckpt, epochs=1, ema_decay=0.5)
    x, y = batch
    with torch.no_grad():
        ema, live = (apply_perturbation(x, g.eval()(x)) for g in (module.generator_ema, module.generator))
    x_adv = AdvGANAttack(str(ckpt))(Untouchable(), x, y)
    assert torch.allclose(x_adv, ema, atol=1e-6) and not torch.allclose(x_adv, live, atol=1e-4)


def test_a_targeted_generator_makes_a_targeted_attack(trained, tmp_path):
    _, _, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"].update(targeted=True, target_class=3)
    torch.save(state, tmp_path / "targeted.ckpt")
    attack = AdvGANAttack(str(tmp_path / "targeted.ckpt"))
    assert attack.targeted and attack.target_class == 3


def test_the_attack_config_builds_it(trained):
    _, _, ckpt = trained
    attack = build_attack({"_target_": "advmed.attacks.AdvGANAttack", "ckpt_path": str(ckpt)})
    assert isinstance(attack, AdvGANAttack) and attack.image_size == SIZE
    assert repr(attack) == f"AdvGANAttack(ckpt_path={str(ckpt)!r})"


def test_images_of_another_size_or_channels_are_refused(trained, batch):
    _, _, ckpt = trained
    x, y = batch
    attack = AdvGANAttack(str(ckpt))
    with pytest.raises(ValueError, match=r"AdvGAN generator '.*best\.ckpt' was trained on 16x16 images but got 32x32: "
                                         r"evaluate on data\.image_size=16, or train an AdvGAN at this size"):
        attack(Untouchable(), torch.nn.functional.interpolate(x, size=32), y)
    with pytest.raises(ValueError, match=r"takes 3-channel images, got 1: use data with in_channels=3"):
        attack(Untouchable(), x[:, :1], y)


def test_other_checkpoints_and_missing_files_are_refused(classifier_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"is not an advmed AdvGANModule checkpoint \(it holds "
                                         r"advmed\.models\.classifier\.ClassifierModule\): pass the best\.ckpt of a "
                                         r"`python -m advmed\.train experiment=lockshin/advgan` run"):
        AdvGANAttack(str(classifier_ckpt))
    with pytest.raises(FileNotFoundError, match=r"nothing\.ckpt' does not exist"):
        AdvGANAttack(str(tmp_path / "nothing.ckpt"))


# ---------------------------------------------------------------------------- through the entry points


def test_evaluate_reports_the_attack_on_a_classifier(trained, classifier_ckpt, tmp_path):
    from advmed.evaluate import evaluate

    _, m, ckpt = trained
    args = [*DATA, f"ckpt_path={classifier_ckpt}", "attack=advgan", f"attack.ckpt_path={ckpt}",
            "callbacks.adversarial_examples.num_images=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    metrics = evaluate(compose_config("evaluate", args, tmp_path / "eval"))
    for key in ("test/acc", "test/adv_acc", "test/attack_success_rate", "test/mean_abs_noise", "test/linf", "test/l2"):
        assert metrics[key] == pytest.approx(m[key], rel=1e-5), key  # what the AdvGAN's own test measured
    assert metrics["test/adv_acc"] < metrics["test/acc"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert f"AdvGANAttack(ckpt_path={ckpt})" in report and "test/mean_abs_noise" in report
    assert (tmp_path / "eval" / "adversarial_examples.png").is_file()
    # Trained at 16 px: 32 px data is refused, naming the size to use.
    args[0] = "data.image_size=32"
    with pytest.raises(ValueError, match=r"trained on 16x16 images but got 32x32: evaluate on data\.image_size=16"):
        evaluate(compose_config("evaluate", args, tmp_path / "eval32"))


def test_augment_writes_an_attacked_copy(trained, classifier_ckpt, tmp_path):
    from advmed.augment import augment

    _, _, ckpt = trained
    args = [*DATA, f"ckpt_path={classifier_ckpt}", "attack=advgan", f"attack.ckpt_path={ckpt}", "split=test",
            f"output_dir={tmp_path / 'copy'}"]
    n, out = augment(compose_config("augment", args, tmp_path / "log"))
    assert n == 18 and len(list(out.rglob("*.png"))) == 18
    # The generator's hash is part of a copy's identity: one retrained at the same path makes another run.
    generator = tmp_path / "advgan.ckpt"
    shutil.copy(ckpt, generator)
    args = [*DATA, f"ckpt_path={classifier_ckpt}", "attack=advgan", f"attack.ckpt_path={generator}", "split=test",
            f"output_dir={tmp_path / 'copy2'}"]
    _, out = augment(compose_config("augment", args, tmp_path / "log"))
    assert json.loads((out / "run.json").read_text())["identity"]["attack_ckpt_path_sha256"] == file_sha256(generator)
    state = torch.load(generator, weights_only=True)
    next(v for k, v in state["state_dict"].items() if k.startswith("generator.")).add_(0.01)
    torch.save(state, generator)
    with pytest.raises(OutputDirError, match=r"holds another run: attack_ckpt_path_sha256 differ"):
        augment(compose_config("augment", args, tmp_path / "log"))


def test_it_is_a_training_attack_for_the_classifier(trained, tmp_path, batch):
    from advmed.train import build_model

    _, _, ckpt = trained
    cfg = compose_config("train", [*DATA, "model.arch=resnet18", "attack=none", "attack@train_attack=advgan",
                                   f"train_attack.ckpt_path={ckpt}", "model.adv_fraction=0.5"], tmp_path)
    model = build_model(cfg)
    assert isinstance(model.train_attack, AdvGANAttack)
    x, y = batch
    mixed = model.mix_adversarial(x, y)
    half = len(x) // 2
    assert torch.allclose(mixed[:half], model.train_attack(model, x[:half], y[:half])) and torch.equal(mixed[half:], x[half:])
    assert not torch.equal(mixed[:half], x[:half])
