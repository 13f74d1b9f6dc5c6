import pytest
import torch

from advmed.attacks import FGSM
from advmed.models import ClassifierModule


def _module(**kwargs) -> ClassifierModule:
    return ClassifierModule("resnet18", num_classes=3, **kwargs)


def test_nan_loss_is_a_clear_error():
    module = _module()
    x = torch.rand(4, 3, 32, 32)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 0.*lower model.optimizer.lr"):
        module.training_step((x, torch.tensor([0, 1, 2, 0])), 0)


def test_adversarial_training_attacks_the_requested_fraction():
    seen = []

    class Recording(FGSM):
        def __call__(self, model, x, y, **kwargs):
            seen.append(len(x))
            return super().__call__(model, x, y, **kwargs)

    module = _module(adv_fraction=0.5, train_attack=Recording(eps=0.1))
    module.train()
    loss = module.training_step((torch.rand(8, 3, 32, 32), torch.randint(0, 3, (8,))), 0)
    assert seen == [4]
    assert loss.requires_grad and module.training  # the attack restored train mode


def test_adv_fraction_needs_an_attack_and_a_valid_range():
    with pytest.raises(ValueError, match="needs a training attack"):
        _module(adv_fraction=0.5)
    with pytest.raises(ValueError, match=r"adv_fraction=1.5 must be in \[0, 1\]"):
        _module(adv_fraction=1.5, train_attack=FGSM(eps=0.1))


def test_test_step_reports_attack_metrics_within_budget():
    module = _module(test_attack=FGSM(eps=0.05)).eval()
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 3, (6,))
    out = module.test_step((x, y), 0)
    assert (out["x_adv"] - x).abs().max() <= 0.05 + 1e-6
    assert 0 <= module.test_adversarial.attack_success_rate.eligible <= 6
    assert module.test_adversarial.linf.compute() <= 0.05 + 1e-6
    assert out["region"] is None  # FGSM may change every pixel


def test_test_step_reports_a_patch_attacks_own_stats_and_region():
    from advmed.attacks import SNAP

    module = _module(test_attack=SNAP(area_fraction=0.1, steps=2, seed=0)).eval()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([1, 2, 1, 0])
    out = module.test_step((x, y), 0)
    area = module.test_adversarial.stats["area_fraction"].compute()
    assert 0.05 <= area <= 0.1
    assert out["region"].shape == (4, 1, 32, 32)
    assert torch.equal(out["x_adv"][~out["region"].expand_as(x)], x[~out["region"].expand_as(x)])


def test_hyperparameters_are_plain_values_for_safe_loading():
    from omegaconf import OmegaConf

    module = ClassifierModule("resnet18", num_classes=3, optimizer=OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1}))
    assert type(module.hparams.optimizer) is dict
    assert isinstance(module.configure_optimizers(), torch.optim.SGD)


def test_class_names_must_match_num_classes():
    with pytest.raises(ValueError, match="2 class_names given for num_classes=3"):
        _module(class_names=["a", "b"])


def test_adversarial_training_under_bf16_autocast_keeps_float32_images_and_batch_norm_statistics():
    checks = {}

    class Checked(FGSM):
        def __call__(self, model, x, y, **kwargs):
            before = [b.clone() for b in model.buffers()]
            x_adv = super().__call__(model, x, y, **kwargs)
            checks["buffers_untouched"] = all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
            checks["dtype"] = x_adv.dtype
            checks["step"] = (x_adv - x).abs().max().item()
            return x_adv

    module = _module(adv_fraction=1.0, train_attack=Checked(eps=0.05))
    module.train()
    x = torch.rand(4, 3, 32, 32) * 0.8 + 0.1  # away from the clamp, so every pixel moves by eps
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what trainer precision=bf16-mixed wraps a step in
        loss = module.training_step((x, torch.tensor([0, 1, 2, 0])), 0)
    assert checks == {"buffers_untouched": True, "dtype": torch.float32, "step": pytest.approx(0.05, abs=1e-6)}
    assert loss.requires_grad and module.training
