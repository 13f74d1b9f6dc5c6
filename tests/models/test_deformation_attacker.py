"""DeformationAttackerModule (Chen et al. 2019): training against a frozen U-Net, its test metrics,
the xi / components / critic settings, and the bad inputs the issue lists."""

from __future__ import annotations

import math

import pytest
import torch

from advmed.models.deformation import DeformationAttackerModule
from tests.models.deformation_toy import attacker, train_attacker, train_unet
from tests.models.segmentation_toy import ToySegmentationDataModule, toy_slices

ORGANS = ("disc", "square")


def test_the_attacker_breaks_the_frozen_unet_and_reports_every_figure(toy_attacker, toy_unet_ckpt):
    model, m, ckpt = toy_attacker
    for organ in ORGANS:
        for prefix in ("", "adv_", "d_only_", "v_only_"):
            assert 0.0 <= m[f"test/{prefix}dice_{organ}"] <= 1.0
        assert m[f"test/dice_drop_{organ}"] == pytest.approx(m[f"test/dice_{organ}"] - m[f"test/adv_dice_{organ}"])
        drop = m[f"test/adv_dice_{organ}"] <= 0.7 * m[f"test/dice_{organ}"]
        assert m[f"test/success_{organ}"] == float(drop)
    assert m["test/success_rate"] == pytest.approx(sum(m[f"test/success_{o}"] for o in ORGANS) / 2)
    assert m["test/dice"] > 0.7 and m["test/adv_dice"] < m["test/dice"] - 0.2  # xi = 3 breaks the toy U-Net
    assert 0.0 < m["test/p"] < 0.5 and m["test/d_only_p"] > 0 and m["test/v_only_p"] > 0
    assert {"train/g_adv", "train/g_xi", "train/g_deformation", "train/g_intensity", "train/d_wasserstein",
            "train/d_gradient_penalty", "train/xent", "val/xent", "val/p", "val/adv_dice"} <= set(m)
    # The U-Net stayed frozen and out of the checkpoint; the checkpoint reloads with it rebuilt.
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())
    unet_state = torch.load(toy_unet_ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, unet_state[k]) for k, v in model.unet.state_dict().items())
    saved = torch.load(ckpt, weights_only=True)
    assert not any(k.startswith("unet.") for k in saved["state_dict"]) and saved["hyper_parameters"]["xi"] == 3.0


def test_xi_sets_the_damage_and_the_perceptibility(tmp_path, toy_unet_ckpt, toy_attacker):
    """Eq. 4: xi = 0 asks for no damage, so the attacker stays near the identity; xi = 3 breaks the U-Net."""
    _, g, _ = train_attacker(tmp_path, toy_unet_ckpt, xi=0.0)
    _, s, _ = toy_attacker
    assert g["test/adv_dice"] > s["test/adv_dice"] + 0.2
    assert g["test/p"] < s["test/p"]
    assert g["test/adv_dice"] > 0.9 * g["test/dice"]


@pytest.mark.parametrize("components", ["d", "v"])
def test_an_ablation_trains_only_its_field(tmp_path, toy_unet_ckpt, components):
    model, m, _ = train_attacker(tmp_path, toy_unet_ckpt, epochs=1, components=components, xi=3.0)
    x, _ = toy_slices(4, 32, seed=7)
    fields = model.generator.eval()(x)
    assert (fields.intensity.abs().sum() == 0) == (components == "d")
    assert (fields.deformation.abs().sum() == 0) == (components == "v")
    assert "test/adv_dice" in m and "test/d_only_dice" not in m and "test/v_only_dice" not in m


def test_weight_clipping_keeps_every_critic_weight_in_range(tmp_path, toy_unet_ckpt):
    model, m, _ = train_attacker(tmp_path, toy_unet_ckpt, epochs=1, critic_constraint="weight_clipping", clip_value=0.02)
    assert all(p.abs().max() <= 0.02 + 1e-7 for p in model.critic.parameters())
    assert "train/d_wasserstein" in m and "train/d_gradient_penalty" not in m


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xi": -0.5}, r"model\.xi=-0\.5 must be >= 0"),
        ({"xi": math.nan}, r"model\.xi=nan must be >= 0"),
        ({"lambda_D": -1.0}, r"model\.lambda_D=-1\.0 must be >= 0"),
        ({"lambda_V": -0.01}, r"model\.lambda_V=-0\.01 must be >= 0"),
        ({"components": "dx"}, r"components='dx' must be one of \('dv', 'd', 'v'\)"),
        ({"critic_constraint": "spectral"}, r"model\.critic_constraint='spectral' must be one of"),
        ({"success_drop": 30}, r"model\.success_drop=30 must be in \(0, 1\)"),
    ],
)
def test_bad_settings_are_refused_with_the_value_and_the_fix(toy_unet_ckpt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attacker(toy_unet_ckpt, **kwargs)


def test_a_unet_of_other_classes_or_channels_than_the_data_is_refused(toy_unet_ckpt):
    five = ["background", "liver", "spleen", "kidneys", "pancreas"]
    with pytest.raises(ValueError, match=r"U-Net checkpoint '.*best\.ckpt' was trained with num_classes=3 but the data has "
                                         r"num_classes=5: attack a U-Net trained on this data"):
        attacker(toy_unet_ckpt, num_classes=5, class_names=five)
    with pytest.raises(ValueError, match=r"was trained with in_channels=1 but the data has in_channels=3"):
        attacker(toy_unet_ckpt, in_channels=3)
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*missing\.ckpt' does not exist"):
        attacker(toy_unet_ckpt.parent / "missing.ckpt")


def test_a_nan_in_the_generator_loss_stops_naming_the_step_and_the_term(tmp_path, toy_unet_ckpt):
    model = attacker(toy_unet_ckpt)
    loss = model.attack_loss
    calls = []

    def poisoned(*args):
        terms, xent = loss(*args)
        calls.append(1)
        if len(calls) == 3:  # the third generator step
            terms["xi"] = terms["xi"] * math.nan
        return terms, xent

    model.attack_loss = poisoned
    from tests.models.deformation_toy import trainer

    with pytest.raises(FloatingPointError, match=r"generator loss term 'xi' is nan at epoch 0, step \d+: lower "
                                                 r"model\.generator_optimizer\.lr"):
        trainer(tmp_path, 1).fit(model, datamodule=ToySegmentationDataModule(n=32))
    assert model.generator_steps == 2


def test_the_checkpoint_rebuilds_the_module_with_its_unet(toy_attacker):
    from advmed.models.checkpoint import load_module

    model, _, ckpt = toy_attacker
    restored = load_module(ckpt, DeformationAttackerModule, datamodule=ToySegmentationDataModule())
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(restored(x, sample=False).x_adv, model.eval()(x, sample=False).x_adv)


def test_unet_training_on_cpu_is_bitwise_reproducible(tmp_path, toy_unet_ckpt):
    """The attacked U-Net (and so every attacker test) is the same on every run: seeded CPU training
    is deterministic."""
    again = train_unet(tmp_path)
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (toy_unet_ckpt, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
