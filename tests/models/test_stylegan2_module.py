"""StyleGAN2Module (Lockshin et al. 2022 sec. 3.1) on the GAN base: training steps and lazy
regularisation, the rescaled optimisers, EMA wiring, sampling, the test FID and judge accuracy,
float32 regularisers under bf16 autocast, and the bad inputs the issue lists."""

from __future__ import annotations

import copy
import math

import lightning as L
import numpy as np
import pytest
import torch

from advmed.data.lymph_node.synthetic_lymph_node import SyntheticLymphNodeDataModule
from advmed.models.checkpoint import load_module
from advmed.models.classifier import ClassifierModule
from advmed.models.stylegan2 import StyleGAN2Module
from tests.models.stylegan2_toy import BATCHES_PER_EPOCH, SIZE, TINY, data, module, save_judge, trainer

TERMS = ("train/d_real", "train/d_fake", "train/d_loss", "train/d_r1", "train/g_adversarial", "train/g_loss",
         "train/g_path_length", "train/pl_mean")


@pytest.fixture(scope="module")
def judge_ckpt(tmp_path_factory):
    return save_judge(tmp_path_factory.mktemp("judge"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, judge_ckpt):
    """The tiny module after two epochs (6 critic and 6 generator steps), its trainer, initial state and checkpoint."""
    root = tmp_path_factory.mktemp("stylegan2")
    L.seed_everything(0)
    model = module(judge_ckpt)
    initial = copy.deepcopy(model.state_dict())
    calls = {"r1": 0, "path_length": 0}
    r1 = model.r1

    def counted_r1(*args, **kwargs):
        calls["r1"] += 1
        return r1(*args, **kwargs)

    counted_r1.gamma = r1.gamma
    model.r1 = counted_r1
    model.path_length.register_forward_hook(lambda *_: calls.__setitem__("path_length", calls["path_length"] + 1))
    fit = trainer(root, 2)
    fit.fit(model, datamodule=data())
    model.r1 = r1
    ckpt = root / "stylegan2.ckpt"
    fit.save_checkpoint(ckpt)
    return model, fit, initial, calls, ckpt


def _changed(model, initial, prefix: str) -> bool:
    return any(not torch.equal(v, initial[k]) for k, v in model.state_dict().items() if k.startswith(prefix))


def test_a_few_steps_train_both_networks_with_every_term_finite(trained):
    model, fit, initial, calls, _ = trained
    steps = 2 * BATCHES_PER_EPOCH
    assert (model.critic_steps, model.generator_steps) == (steps, steps)
    metrics = fit.callback_metrics
    for name in TERMS:
        assert name in metrics and torch.isfinite(metrics[name]), name
    assert metrics["train/d_loss"] == pytest.approx(float(metrics["train/d_real"] + metrics["train/d_fake"]), abs=1e-6)
    # Every network stepped: the mapping and synthesis networks, the critic, and the EMA followed.
    for prefix in ("generator.mapping_network.layers", "generator.synthesis_network", "critic.", "generator_ema."):
        assert _changed(model, initial, prefix), prefix
    # The lazy regularisers ran at critic / generator steps 0, 2, 4 (interval 2), and pl_mean moved off 0.
    assert calls == {"r1": 3, "path_length": 3}
    assert model.path_length.pl_mean > 0
    assert model.sampling_generator is model.generator_ema


def test_the_optimisers_hold_the_lazy_regularisation_rescaled_adam():
    """StyleGAN2 appendix B: lr * k / (k + 1) and beta ** (k / (k + 1)); G k = 4, D k = 16."""
    model = StyleGAN2Module(**{**TINY, "critic_reg_interval": 16, "generator_reg_interval": 4})
    g_opt, d_opt = model.configure_optimizers()
    g, d = g_opt.param_groups[0], d_opt.param_groups[0]
    assert isinstance(g_opt, torch.optim.Adam) and isinstance(d_opt, torch.optim.Adam)
    assert g["lr"] == pytest.approx(0.002) and d["lr"] == pytest.approx(0.0023529411765)
    assert g["betas"][0] == 0.0 and g["betas"][1] == pytest.approx(0.9919919678)
    assert d["betas"][1] == pytest.approx(0.9905854573) and g["eps"] == 1e-8
    assert {id(p) for p in g["params"]} == {id(p) for p in model.generator.parameters()}
    assert {id(p) for p in d["params"]} == {id(p) for p in model.critic.parameters()}
    # No lazy regularisation: the configured values as they are.
    plain = StyleGAN2Module(**{**TINY, "critic_reg_interval": None, "generator_reg_interval": None})
    assert plain.configure_optimizers()[0].param_groups[0]["lr"] == 0.0025


def test_the_defaults_are_the_documented_paper_settings():
    model = StyleGAN2Module(num_classes=9, image_size=8, channel_base=64, channel_max=16, z_dim=8, w_dim=8)
    h = model.hparams
    assert h.r1_gamma == pytest.approx(0.1024)  # 0.0002 * 128^2 / 32
    assert h.ema_decay == pytest.approx(0.997784, abs=1e-6) and h.ema_rampup == 0.05  # ema_kimg 10 at batch 32
    assert (h.critic_reg_interval, h.generator_reg_interval, h.style_mixing_prob) == (16, 4, 0.9)
    assert (h.pl_weight, h.pl_decay, h.pl_batch_shrink, h.n_critic) == (2.0, 0.01, 2, 1)
    assert h.fid["features"] == "inception" and h.fid["reference_split"] == "train"


def test_the_ema_update_of_the_module_follows_its_formula():
    model = StyleGAN2Module(**TINY)
    model.generator_steps = 10  # ramp-up: beta = min(ema_decay, 0.5 ** (1 / (0.05 * 10))) = 0.25
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(torch.randn_like(p))
        model.generator.mapping_network.w_avg.fill_(0.5)
    before = [p.clone() for p in model.generator_ema.parameters()]
    model.update_ema()
    for old, new, ema in zip(before, model.generator.parameters(), model.generator_ema.parameters(), strict=True):
        assert torch.allclose(ema, 0.25 * old + 0.75 * new, atol=1e-6)
    assert torch.equal(model.generator_ema.mapping_network.w_avg, torch.full_like(model.generator_ema.mapping_network.w_avg, 0.5))
    model.generator_steps = 0  # the first update copies the generator
    model.update_ema()
    assert all(torch.equal(a, b) for a, b in zip(model.generator_ema.parameters(), model.generator.parameters(), strict=True))


def test_sample_returns_unit_range_tiles_of_the_requested_labels(trained):
    model = trained[0]
    labels = torch.tensor([0, 3, 8, 8, 1])
    images = model.sample(labels, generator=torch.Generator().manual_seed(1))
    assert images.shape == (5, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0
    again = model.sample(labels, generator=torch.Generator().manual_seed(1), batch_size=2)
    assert torch.allclose(images, again, atol=1e-5)  # a seed fixes the tiles, whatever the chunking (up to rounding)
    assert not torch.equal(images, model.sample(labels, generator=torch.Generator().manual_seed(2)))
    # Truncation psi = 0 puts every z at its class's mean w: identical tiles within a class.
    centre = model.sample(torch.tensor([2, 2, 2]), truncation_psi=0.0)
    assert torch.equal(centre[0], centre[1]) and torch.equal(centre[0], centre[2])
    assert model.sample(torch.zeros(0, dtype=torch.long)).shape == (0, 3, SIZE, SIZE)
    # Per-tile noise (the FID's) comes from the seeded generator too, and leaves the global RNG alone.
    state = torch.get_rng_state()
    noisy = model.sample(labels, generator=torch.Generator().manual_seed(1), noise_mode="random")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(noisy, model.sample(labels, generator=torch.Generator().manual_seed(1), noise_mode="random"))
    assert not torch.equal(noisy, images)  # the trained noise strengths are not zero
    with pytest.raises(ValueError, match=r"labels must be a 1-D integer tensor"):
        model.sample(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels \[9\] must lie in \[0, 8\]"):
        model.sample(torch.tensor([9]))


def test_the_test_step_reports_fid_per_class_and_the_judges_accuracy(trained, judge_ckpt):
    model, fit, _, _, _ = trained
    datamodule = data()
    fit.test(model, datamodule=datamodule, verbose=False)
    m = {k: float(v) for k, v in fit.callback_metrics.items()}
    names = TINY["class_names"]
    assert {f"test/fid_{name}" for name in names} <= set(m)
    assert m["test/fid_num_real"] == 18 and m["test/fid_num_generated"] == 18  # the 18 training tiles, same labels
    assert "advmed classifier penultimate 512" in model.test_fid_result["feature_extractor"]

    # The judge's accuracy, recomputed: the same seeded latents for the test batches' labels, in order.
    judge = load_module(judge_ckpt, ClassifierModule)
    rng, correct, total = torch.Generator().manual_seed(0), 0, 0
    datamodule.setup("test")
    for _, y in datamodule.test_dataloader():
        correct += int((judge(model.sample(y, generator=rng, noise_mode="random")).argmax(1) == y).sum())
        total += len(y)
    assert m["test/judge_acc"] == pytest.approx(correct / total)
    assert 0.0 <= m["test/judge_real_acc"] <= 1.0

    # test/fid, recomputed from eq. 2 with numpy on features caught at the judge's fc input.
    features = []
    judge.net.backbone.fc.register_forward_hook(lambda _, inputs, __: features.append(inputs[0].double().numpy()))
    real = list(datamodule.train_dataloader())
    labels = torch.cat([y for _, y in real])
    rng = torch.Generator().manual_seed(0)  # fid.seed; the latents drawn chunk by chunk (fid.batch_size = 8)
    with torch.no_grad():
        judge(torch.cat([x for x, _ in real]))
        judge(torch.cat([model.sample(chunk, generator=rng, noise_mode="random") for chunk in labels.split(8)]))
    assert m["test/fid"] == pytest.approx(_frechet(*features), rel=1e-3, abs=1e-3)


def _frechet(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    c1, c2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = np.sqrt(np.linalg.eigvals(c1 @ c2).astype(complex)).real.sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * root)


def test_the_regularisers_stay_float32_under_bf16_autocast():
    model = StyleGAN2Module(**TINY)
    x, y = torch.rand(4, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 3])
    r1 = model.critic_regularizer((x, y))["r1"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.critic(x, y).dtype == torch.bfloat16  # autocast is on for the networks
        r1_autocast = model.critic_regularizer((x, y))["r1"]
        pl = model.generator_regularizer((x, y))["path_length"]
        adversarial = model.generator_loss((x, y))["adversarial"]
    assert r1_autocast.dtype == torch.float32 and torch.equal(r1_autocast, r1)  # computed with autocast off
    assert pl.dtype == torch.float32 and torch.isfinite(pl) and adversarial.dtype == torch.float32


def test_a_bf16_mixed_fit_keeps_every_term_finite(tmp_path, judge_ckpt):
    L.seed_everything(0)
    model = module(judge_ckpt)
    fit = trainer(tmp_path, 1, precision="bf16-mixed")
    fit.fit(model, datamodule=data())
    assert model.generator_steps == BATCHES_PER_EPOCH
    assert all(torch.isfinite(fit.callback_metrics[name]) for name in TERMS)


def test_the_checkpoint_rebuilds_the_module_and_refuses_data_of_other_classes(trained):
    model, _, _, _, ckpt = trained
    restored = load_module(ckpt, StyleGAN2Module, datamodule=data())
    assert torch.equal(restored.path_length.pl_mean, model.path_length.pl_mean)  # pl_mean is in the checkpoint
    labels = torch.tensor([0, 4, 8])
    seed = torch.Generator().manual_seed(3)
    assert torch.equal(restored.sample(labels, generator=seed), model.sample(labels, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match=r"checkpoint '.*stylegan2\.ckpt': the model was trained with num_classes=9 but "
                                         r"the data config has num_classes=2: use the data it was trained on"):
        load_module(ckpt, StyleGAN2Module, datamodule=SyntheticLymphNodeDataModule(image_size=32))


def test_data_of_another_image_size_is_refused():
    with pytest.raises(ValueError, match=r"the model generates image_size=16 tiles but the data has image_size=32: "
                                         r"set data\.image_size=16, or train a generator at that size"):
        StyleGAN2Module(**TINY).check_datamodule(data(image_size=32))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"image_size": 48}, ValueError, r"model\.image_size=48 must be a power of two"),
        ({"style_mixing_prob": 1.5}, ValueError, r"model\.style_mixing_prob=1\.5 must be in \[0, 1\]"),
        ({"truncation_psi": math.nan}, ValueError, r"model\.truncation_psi=nan must be a finite number"),
        ({"class_names": ["a", "b"]}, ValueError, r"2 class_names given for num_classes=9"),
        ({"r1_gamma": -1.0}, ValueError, r"model\.r1_gamma=-1\.0 must be a finite number >= 0"),
        ({"generator_optimizer": {"_target_": "torch.optim.Adam", "betas": [0.0, 0.99]}}, ValueError,
         r"model\.generator_optimizer needs an explicit lr \(got None\)"),
        ({"fid": {"features": "vgg"}}, ValueError, r"model\.fid\.features='vgg' must be one of \('inception', 'classifier'\)"),
        ({"fid": {"features": "classifier"}}, ValueError, r"model\.fid\.features=classifier needs model\.fid\.classifier_ckpt="),
        ({"fid": {"reference_split": "holdout"}}, ValueError, r"model\.fid\.reference_split='holdout' must be one of"),
        ({"fid": {"num_imgs": 10}}, ValueError, r"model\.fid has no key\(s\) \['num_imgs'\]: the keys are"),
        ({"fid": {"num_images": 1}}, ValueError, r"model\.fid\.num_images=1 must be an integer >= 2"),
        ({"fid": {"noise_mode": "fresh"}}, ValueError, r"model\.fid\.noise_mode='fresh' must be one of \('random', 'const', 'none'\)"),
    ],
)
def test_bad_settings_are_refused_with_the_value_and_the_fix(kwargs, error, message):
    with pytest.raises(error, match=message):
        StyleGAN2Module(**{**TINY, **kwargs})


def test_missing_fid_weights_or_classifier_fail_before_training(tmp_path, judge_ckpt, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty torch hub cache
    with pytest.raises(FileNotFoundError, match=r"FID Inception weights weights-inception-2015-12-05-6726825d\.pth "
                                                r"not found in .*hub/checkpoints.*Nothing is downloaded"):
        StyleGAN2Module(**TINY).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"FID Inception weights not found at .*missing\.pth"):
        StyleGAN2Module(**TINY, fid={"weights_path": str(tmp_path / "missing.pth")}).setup("test")
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nowhere\.ckpt' does not exist"):
        module(tmp_path / "nowhere.ckpt").setup("fit")
    big = module(judge_ckpt, image_size=32)  # the judge was trained on 16 px tiles
    with pytest.raises(ValueError, match=r"model\.fid\.classifier_ckpt '.*judge_16\.ckpt' was trained on image_size=16 "
                                         r"tiles but the generator makes image_size=32: train the classifier on "
                                         r"data\.image_size=32"):
        big.setup("fit")
    with pytest.raises(ValueError, match=r"or set model\.fid\.resize=true to resize every image"):
        big.setup("fit")


def test_a_judge_of_another_size_is_used_through_resizing_when_asked(tmp_path, judge_ckpt):
    """fid.resize: the 16 px judge scores 32 px tiles resized to 16 px, real and generated alike."""
    from advmed.metrics.generator_fid import ClassifierFeatures, resize_to

    L.seed_everything(0)
    big = module(judge_ckpt, fid={"resize": True}, image_size=32)
    fit = trainer(tmp_path, 1, limit_train_batches=1)
    fit.fit(big, datamodule=data(image_size=32))
    fit.test(big, datamodule=data(image_size=32))
    assert 0.0 <= fit.callback_metrics["test/judge_acc"] <= 1.0 and torch.isfinite(fit.callback_metrics["test/fid"])
    extractor = big.fid_feature_extractor()
    assert "images resized to 16 px" in extractor.description
    x = torch.rand(3, 3, 32, 32)
    small = resize_to(x, 16)
    assert small.shape[-1] == 16 and resize_to(small, 16) is small
    direct = ClassifierFeatures(big.judge().net, "direct")(small)
    assert torch.allclose(extractor(x), direct, atol=1e-5)
