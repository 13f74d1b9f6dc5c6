"""DeformationAttack: a trained Chen et al. 2019 attacker applied from its checkpoint to any
segmentation model (DESIGN contract 2), and the checkpoints and images it refuses."""

from __future__ import annotations

import pytest
import torch

from advmed.attacks import DeformationAttack, build_attack
from advmed.models.checkpoint import load_module
from advmed.nets.deformation import warp
from tests.models.segmentation_toy import toy_slices


@pytest.fixture(scope="module")
def unet(toy_unet_ckpt):
    return load_module(toy_unet_ckpt)


@pytest.fixture(scope="module")
def batch():
    x, y = toy_slices(6, 32, seed=11)
    return x, y.long()


def test_it_reproduces_the_trained_generator_and_reports_p(toy_attacker, toy_unet_ckpt, batch):
    module, _, ckpt = toy_attacker
    x, y = batch
    unet = load_module(toy_unet_ckpt)
    attack = DeformationAttack(str(ckpt), sample=False)
    result = attack.run(unet, x, y)
    expected = module.generator.eval()(x, sample=False)
    assert torch.allclose(result.x_adv, expected.x_adv, atol=1e-6)
    assert result.x_adv.shape == x.shape and 0 <= result.x_adv.min() and result.x_adv.max() <= 1
    assert torch.allclose(result.stats["p"], (result.x_adv - x).abs().flatten(1).mean(1))
    assert torch.allclose(result.stats["displacement"], expected.deformation.norm(dim=1).flatten(1).mean(1))
    assert not torch.equal(result.x_adv, x)
    assert all(not p.requires_grad or p.grad is None for p in unet.parameters())  # the model is not touched


def test_each_field_alone_and_seeded_sampling(toy_attacker, unet, batch):
    _, _, ckpt = toy_attacker
    x, y = batch
    means = DeformationAttack(str(ckpt), sample=False)._generator(x, sample=False)
    d_only = DeformationAttack(str(ckpt), fields="d", sample=False)(unet, x, y)
    v_only = DeformationAttack(str(ckpt), fields="v", sample=False)(unet, x, y)
    assert torch.allclose(d_only, warp(x, means.deformation).clamp(0, 1), atol=1e-6)
    assert torch.allclose(v_only, (x + means.intensity).clamp(0, 1), atol=1e-6)
    first = DeformationAttack(str(ckpt), seed=3)
    a, b = first(unet, x, y), first(unet, x, y)
    assert not torch.equal(a, b)  # one RNG for the attack's life: each call draws new latents
    again = DeformationAttack(str(ckpt), seed=3)
    assert torch.equal(again(unet, x, y), a) and torch.equal(again(unet, x, y), b)


def test_the_attack_config_builds_it(toy_attacker):
    _, _, ckpt = toy_attacker
    attack = build_attack({"_target_": "advmed.attacks.DeformationAttack", "ckpt_path": str(ckpt), "fields": None})
    assert isinstance(attack, DeformationAttack) and attack.fields == "dv" and attack.norm == "generative"


def test_images_of_another_size_or_channels_are_refused(toy_attacker, unet, batch):
    _, _, ckpt = toy_attacker
    x, y = batch
    attack = DeformationAttack(str(ckpt))
    big = torch.nn.functional.interpolate(x, size=64)
    with pytest.raises(ValueError, match=r"trained on 32x32 images but got 64x64: evaluate on data\.image_size=32"):
        attack(unet, big, torch.zeros(6, 64, 64, dtype=torch.long))
    with pytest.raises(ValueError, match=r"takes 1-channel images, got 3"):
        attack(unet, x.expand(-1, 3, -1, -1).contiguous(), y)


def test_wrong_checkpoints_and_fields_are_refused(toy_attacker, toy_unet_ckpt, tmp_path):
    _, _, ckpt = toy_attacker
    with pytest.raises(ValueError, match=r"is not an advmed DeformationAttackerModule checkpoint \(it holds "
                                         r"advmed\.models\.segmentation\.SegmentationModule\)"):
        DeformationAttack(str(toy_unet_ckpt))
    with pytest.raises(FileNotFoundError, match=r"nothing\.ckpt' does not exist"):
        DeformationAttack(str(tmp_path / "nothing.ckpt"))
    with pytest.raises(ValueError, match=r"attack\.fields='x' must be one of"):
        DeformationAttack(str(ckpt), fields="x")
    # An attacker trained without V (components=d) has no intensity field to apply.
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["components"] = "d"
    torch.save(state, tmp_path / "d_only.ckpt")
    with pytest.raises(ValueError, match=r"was trained with components='d' and has no V field"):
        DeformationAttack(str(tmp_path / "d_only.ckpt"), fields="v")
