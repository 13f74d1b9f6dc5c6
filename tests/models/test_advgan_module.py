"""AdvGANModule (Lockshin et al. 2022 sec. 3.3): training against a frozen classifier, its validation and
test metrics, the targeted variant, checkpoint restore, and the bad inputs the issue lists."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException

from advmed.metrics.attack_success import attack_success_mask
from advmed.models.advgan import AdvGANModule
from advmed.models.checkpoint import load_module
from advmed.utils.files import file_sha256
from tests.models.advgan_toy import advgan, train_advgan
from tests.models.classifier_toy import data, train_classifier, trainer
from tests.shared_artifacts import build_once, cached_in_worker

EPOCHS = 8  # two batches of 36 per epoch: 16 discriminator and 16 generator steps


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    return build_once(tmp_path_factory, "advgan_toy_classifier", train_classifier)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, classifier_ckpt):
    return cached_in_worker(tmp_path_factory, "advgan_toy", lambda root: train_advgan(root, classifier_ckpt, EPOCHS))


def test_training_fools_the_frozen_classifier_with_moderate_noise(trained):
    _, m, _ = trained
    assert m["test/acc"] >= 0.3  # the toy classifier is far above chance (1/9) on clean tiles ...
    # ... and the generator, from the identity (success exactly 0, next test), flips a good share of the tiles
    # it gets right: 0.375 to 0.6 on the CPUs seen (a toy GAN of 16 steps moves with the float sums of the CPU)
    assert m["test/attack_success_rate"] >= 0.25
    assert m["test/adv_acc"] < m["test/acc"]  # flips outnumber fixes
    assert 0.0 < m["test/mean_abs_noise"] < 0.15 and m["test/mean_abs_noise"] < m["test/linf"] <= 0.5
    assert m["test/l2"] > 0.0
    assert 0.0 < m["val/mean_abs_noise"] < 0.15 and m["val/linf"] > 0.0 and 0.0 <= m["val/attack_success_rate"] <= 1.0
    for key in ("train/g_nce", "train/g_gan", "train/g_threshold", "train/g_loss", "train/d_real", "train/d_fake",
                "train/d_loss", "train/ce"):
        assert math.isfinite(m[key]), key
    assert m["train/g_loss"] == pytest.approx(m["train/g_nce"] + m["train/g_gan"] + m["train/g_threshold"], rel=1e-5)


def test_an_untrained_generator_fools_nothing(classifier_ckpt, tmp_path):
    """The attack success rises from exactly 0: the generator starts as the identity (G(x) = 0)."""
    L.seed_everything(0)
    fresh = trainer(tmp_path, 1)
    fresh.test(advgan(classifier_ckpt), datamodule=data(), verbose=False)
    m = {k: float(v) for k, v in fresh.callback_metrics.items()}
    assert m["test/attack_success_rate"] == 0.0 and m["test/linf"] == 0.0 and m["test/adv_acc"] == m["test/acc"]


def test_both_networks_step_and_the_classifier_stays_frozen(trained, classifier_ckpt):
    model, _, ckpt = trained
    assert model.critic_steps == model.generator_steps == 2 * EPOCHS
    assert model.trainer.global_step == 4 * EPOCHS  # Lightning counts both optimisers' steps
    untrained = advgan(classifier_ckpt)
    assert float(model.generator.head.weight.detach().abs().max()) > 0.0  # the zero head learnt
    moved = [not torch.equal(a, b) for a, b in zip(model.critic.parameters(), untrained.critic.parameters(), strict=True)]
    assert all(moved)
    assert not model.classifier.training and not any(p.requires_grad for p in model.classifier.parameters())
    original = torch.load(classifier_ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, original[f"net.{k}"]) for k, v in model.classifier.net.state_dict().items())
    saved = torch.load(ckpt, weights_only=True)
    assert not any(k.startswith("classifier.") for k in saved["state_dict"])
    assert saved["hyper_parameters"]["classifier_sha256"] == file_sha256(classifier_ckpt)
    assert saved["hyper_parameters"]["thr"] == 0.1 and saved["hyper_parameters"]["gamma"] == 10.0


def test_the_checkpoint_rebuilds_the_module_with_its_classifier(trained, tmp_path):
    model, _, ckpt = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the same classifier file: no provenance warning
        restored = load_module(ckpt, AdvGANModule, datamodule=data())
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(restored(x), model.eval()(x))
        assert torch.equal(restored.classifier(x), model.classifier(x))
    # A classifier file that changed since training is named in a warning.
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["classifier_sha256"] = "0" * 64
    torch.save(state, tmp_path / "moved.ckpt")
    with pytest.warns(UserWarning, match=r"classifier checkpoint '.*classifier\.ckpt' is not the one this AdvGAN was "
                                         r"trained against \(sha256 [0-9a-f]{12}, trained against 000000000000\)"):
        load_module(tmp_path / "moved.ckpt", AdvGANModule)


def test_a_targeted_advgan_logs_its_term_and_counts_moves_to_the_target(tmp_path, classifier_ckpt):
    model, m, _ = train_advgan(tmp_path, classifier_ckpt, epochs=2, targeted=True, target_class=3)
    assert "train/g_target_ce" in m and "train/g_nce" not in m
    # test/attack_success_rate: correctly classified tiles of another class that now read as class 3
    datamodule = data()
    datamodule.setup("test")
    x, y = next(iter(datamodule.test_dataloader()))
    with torch.no_grad():
        clean, adv = model.classifier(x).argmax(1), model.classifier(model(x)).argmax(1)
    eligible, fooled = attack_success_mask(clean, adv, y, torch.full_like(y, 3))
    assert len(y) == 18 and int(eligible.sum()) > 0
    assert m["test/attack_success_rate"] == pytest.approx(float(fooled.sum()) / float(eligible.sum()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thr": 0.0}, r"model\.thr=0\.0 must be > 0"),
        ({"thr": -0.2}, r"model\.thr=-0\.2 must be > 0"),
        ({"gamma": -10.0}, r"model\.gamma=-10\.0 must be a number >= 0"),
        ({"theta": -1.0}, r"model\.theta=-1\.0 must be a number >= 0"),
        ({"zeta": -1.0}, r"model\.zeta=-1\.0 must be a number >= 0"),
        ({"targeted": True}, r"model\.target_class=None must be a class index in \[0, 8\] for a targeted AdvGAN"),
        ({"targeted": True, "target_class": 9}, r"model\.target_class=9 must be a class index in \[0, 8\]"),
        ({"target_class": 2}, r"model\.target_class=2 needs model\.targeted=true"),
    ],
)
def test_bad_settings_are_refused_with_the_value_and_the_fix(classifier_ckpt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        advgan(classifier_ckpt, **kwargs)


def test_a_missing_or_unset_classifier_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.classifier_ckpt='.*missing\.ckpt' does not exist: pass the "
                                                r"checkpoints/best\.ckpt of a classifier trained on this data"):
        advgan(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match=r"model\.classifier_ckpt is not set: pass the checkpoints/best\.ckpt"):
        advgan(None)


def test_a_classifier_of_other_classes_or_channels_than_the_data_is_refused(classifier_ckpt):
    three = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"the classifier checkpoint '.*classifier\.ckpt' was trained with num_classes=9 "
                                         r"but the data has num_classes=3: attack a classifier trained on this data"):
        advgan(classifier_ckpt, num_classes=3, class_names=three)
    with pytest.raises(ValueError, match=r"was trained with in_channels=3 but the data has in_channels=1"):
        advgan(classifier_ckpt, in_channels=1)
    renamed = ["adipose", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    with pytest.raises(ValueError, match=r"was trained with class_names=\['ADI', .*but the data has class_names=\['adipose'"):
        advgan(classifier_ckpt, class_names=renamed)


def test_a_checkpoint_of_another_module_is_refused_as_the_classifier(trained):
    _, _, ckpt = trained
    with pytest.raises(ValueError, match=r"is not an advmed ClassifierModule checkpoint: it holds a AdvGANModule"):
        advgan(ckpt)


# ---------------------------------------------------------------------------- the experiment configs


def test_the_full_size_experiment_has_the_papers_settings(tmp_path):
    from tests.entrypoints.conftest import compose_config

    cfg = compose_config("train", ["experiment=lockshin/advgan", "model.classifier_ckpt=/c.ckpt"], tmp_path)
    model = cfg.model
    assert (model.gamma, model.theta, model.zeta, model.thr) == (10.0, 1.0, 1.0, 0.1)
    assert (cfg.data.image_size, cfg.data.batch_size, model.image_size) == (224, 16, 224)
    assert cfg.trainer.max_steps == 2 * 68000  # one discriminator and one generator step per iteration
    assert cfg.attack == {} and cfg.train_attack == {} and model.num_classes == 9


def test_the_tiny_experiment_trains_through_the_entry_point(classifier_ckpt, tmp_path):
    from advmed.train import train
    from tests.entrypoints.conftest import compose_config

    # Hydra wraps the module's ValueError; the user reads its message.
    with pytest.raises(InstantiationException, match=r"model\.classifier_ckpt is not set: pass the checkpoints") as error:
        train(compose_config("train", ["experiment=lockshin/advgan_tiny"], tmp_path / "unset"))
    assert isinstance(error.value.__cause__, ValueError)
    args = ["experiment=lockshin/advgan_tiny", f"model.classifier_ckpt={classifier_ckpt}", "data.image_size=16",
            "data.train_per_class=2", "data.val_per_class=1", "data.test_per_class=1", "trainer.max_epochs=1",
            "callbacks.adversarial_examples.num_images=2"]
    metrics = train(compose_config("train", args, tmp_path / "run"))
    assert {"test/acc", "test/adv_acc", "test/attack_success_rate", "test/mean_abs_noise", "test/linf", "test/l2"} <= set(metrics)
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file() and (tmp_path / "run" / "adversarial_examples.png").is_file()
