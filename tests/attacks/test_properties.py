"""Contract properties of every attack in ``advmed.attacks.__all__``, on a tiny classifier and
a tiny segmentation network (DESIGN.md contract 2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import advmed.attacks as attacks
from advmed.attacks.core.losses import cross_entropy
from tests.attacks.conftest import ATTACKS, CLASSIFICATION_ONLY, OWN_LOSS, SEEDED, budget, make_attack

TASKS = ["classification", "segmentation"]


@pytest.fixture(params=TASKS)
def task(request, classifier, segmenter, cls_batch, seg_batch):
    """(model, x, y) for each task the attack class under test (``cls``) is defined for."""
    if request.param == "classification":
        return (classifier, *cls_batch)
    if getattr(request.node, "callspec", None) and request.node.callspec.params.get("cls") in CLASSIFICATION_ONLY:
        pytest.skip("a classification-only attack: its own tests check that it refuses segmentation logits")
    return (segmenter, *seg_batch)


def _result(attack, model, x, y, **kwargs):
    out = attack(model, x, y, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def test_all_lists_exactly_the_attack_classes():
    assert sorted(attacks.__all__) == sorted([
        "FGSM",
        "InverseFGSM",
        "BIM",
        "PGD",
        "PGDL2",
        "SNAP",
        "SegPGD",
        "CosPGD",
        "APGD",
        "FAB",
        "CW",
        "Square",
    ])
    assert all(issubclass(cls, attacks.Attack) for cls in ATTACKS)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_output_in_range_budget_shape_dtype_device(cls, task):
    model, x, y = task
    attack = make_attack(cls)
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (budget(x_adv, x, attack.norm) <= attack.eps * (1 + 1e-5) + 1e-7).all()
    assert not torch.equal(x_adv, x)
    assert not x_adv.requires_grad


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_model_mode_restored_and_eval_during_attack(cls, task, training):
    model, x, y = task
    model.train(training)
    model[2].eval()  # a frozen BatchNorm inside a training model must stay frozen
    before = {name: m.training for name, m in model.named_modules()}
    seen = []
    hook = model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    make_attack(cls)(model, x, y)
    hook.remove()
    assert seen and not any(seen)
    assert {name: m.training for name, m in model.named_modules()} == before


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_parameters_unchanged_and_no_grad(cls, task):
    model, x, y = task
    state = {k: v.clone() for k, v in model.state_dict().items()}
    make_attack(cls)(model, x, y)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_seeded_determinism(cls, task):
    model, x, y = task
    kwargs = {"seed": 7} if cls in SEEDED else {}
    attack = make_attack(cls, **kwargs)
    torch.manual_seed(123)
    first = attack(model, x, y)
    torch.manual_seed(456)  # a private generator: the global RNG state does not matter
    assert torch.equal(attack(model, x, y), first)


@pytest.mark.parametrize("cls", [attacks.PGD, attacks.PGDL2], ids=lambda c: c.__name__)
def test_random_start_uses_the_global_rng_without_seed(cls, classifier, cls_batch):
    x, y = cls_batch
    attack = make_attack(cls)
    torch.manual_seed(0)
    a = attack(classifier, x, y)
    torch.manual_seed(0)
    assert torch.equal(attack(classifier, x, y), a)
    assert not torch.equal(attack(classifier, x, y), a)


def _loss(model, x, y):
    with torch.no_grad():
        return cross_entropy(model(x), y).mean()


@pytest.mark.parametrize(
    "cls", [c for c in ATTACKS if c is not attacks.InverseFGSM], ids=lambda c: c.__name__
)
def test_untargeted_attacks_raise_the_loss(cls, task):
    model, x, y = task
    assert _loss(model, make_attack(cls)(model, x, y), y) > _loss(model, x, y)


def test_inverse_fgsm_lowers_the_loss(task):
    model, x, y = task
    assert _loss(model, attacks.InverseFGSM(eps=0.03)(model, x, y), y) < _loss(model, x, y)


def test_inverse_fgsm_is_fgsm_mirrored(classifier, cls_batch):
    x, y = cls_batch
    up = attacks.FGSM(eps=0.03)(classifier, x, y) - x
    down = attacks.InverseFGSM(eps=0.03)(classifier, x, y) - x
    inside = (x > 0.03) & (x < 0.97)  # away from the [0, 1] clip
    assert torch.allclose(up[inside], -down[inside], atol=1e-6)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_targeted_attacks_pull_toward_the_target(cls, task):
    model, x, y = task
    target = (y + 1) % (model[-1].out_features if y.ndim == 1 else model[-1].out_channels)
    adv = make_attack(cls, targeted=True)(model, x, y, target=target)
    toward = bool(_loss(model, adv, target) < _loss(model, x, target))
    # InverseFGSM descends the (targeted) objective: it moves away from the target.
    assert toward is (cls is not attacks.InverseFGSM)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_runs_under_no_grad(cls, classifier, cls_batch):
    x, y = cls_batch
    with torch.no_grad():  # Lightning's eval loops with inference_mode=false
        x_adv = make_attack(cls)(classifier, x, y)
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_inference_mode_raises_a_clear_error(cls, classifier, cls_batch):
    x, y = cls_batch
    with torch.inference_mode(), pytest.raises(RuntimeError, match="trainer.inference_mode=false"):
        make_attack(cls)(classifier, x, y)


def test_inference_tensors_are_accepted_outside_inference_mode(classifier):
    with torch.inference_mode():
        x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    assert attacks.PGD(eps=0.03, steps=2)(classifier, x, y).shape == x.shape


# SNAP replaces its patch pixels whatever their gradient (paper eq. 2): locality is its mask's, not the loss's.
@pytest.mark.parametrize(
    "cls", [c for c in ATTACKS if c is not attacks.SNAP and c not in CLASSIFICATION_ONLY], ids=lambda c: c.__name__
)
def test_masked_segmentation_loss_leaves_far_pixels_alone(cls, segmenter, seg_batch):
    x, y = seg_batch
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, :3, :3] = True
    kwargs = {"random_start": False} if cls in (attacks.PGD, attacks.PGDL2, *OWN_LOSS) else {}
    delta = make_attack(cls, **kwargs)(segmenter, x, y, mask=mask) - x
    # Receptive field 3x3: pixels 2+ rows/columns away from the mask get no gradient.
    far = torch.ones_like(y, dtype=torch.bool)
    far[:, :4, :4] = False
    assert (delta.abs().amax(1)[far] == 0).all()
    assert (delta[:, :, :3, :3] != 0).any()


def test_loss_classes_restrict_the_pixels(segmenter, seg_batch):
    x, _ = seg_batch
    y = torch.zeros(x.shape[0], 10, 10, dtype=torch.long)
    y[:, 6:, 6:] = 2
    delta = attacks.FGSM(eps=0.03, loss_classes=[2])(segmenter, x, y) - x
    assert (delta[:, :, :5, :] == 0).all() and (delta[:, :, :, :5] == 0).all()
    assert (delta[:, :, 6:, 6:] != 0).any()


# SegPGD and CosPGD weight their own per-pixel cross-entropy: they refuse loss='dice' (tested in their files).
@pytest.mark.parametrize(
    "cls", [c for c in ATTACKS if c not in OWN_LOSS and c not in CLASSIFICATION_ONLY], ids=lambda c: c.__name__
)
def test_dice_loss_attacks_segmentation(cls, segmenter, seg_batch):
    x, y = seg_batch
    attack = make_attack(cls, loss="dice")
    x_adv = attack(segmenter, x, y)
    assert (budget(x_adv, x, attack.norm) <= attack.eps * (1 + 1e-5) + 1e-7).all()
    with torch.no_grad():
        dice = attack.objective(segmenter(x_adv), y, None).mean()
        clean = attack.objective(segmenter(x), y, None).mean()
    assert (dice < clean) if cls is attacks.InverseFGSM else (dice > clean)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_fixed_target_class_equals_call_time_target(cls, classifier, cls_batch):
    x, y = cls_batch
    kwargs = {"seed": 0} if cls in SEEDED else {}
    fixed = make_attack(cls, targeted=True, target_class=2, **kwargs)(classifier, x, y)
    given = make_attack(cls, targeted=True, **kwargs)(classifier, x, y, target=torch.full_like(y, 2))
    assert torch.equal(fixed, given)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_bf16_autocast_keeps_float32_perturbation(cls, classifier, cls_batch):
    x, y = cls_batch
    attack = make_attack(cls, amp_dtype="bf16")
    x_adv = attack(classifier, x, y)
    assert x_adv.dtype == torch.float32
    assert (budget(x_adv, x, attack.norm) <= attack.eps * (1 + 1e-5) + 1e-7).all()
    assert _loss(classifier, x_adv, y) > _loss(classifier, x, y) or cls is attacks.InverseFGSM


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_channels_last_gives_the_same_result_in_the_input_layout(cls, classifier, cls_batch):
    x, y = cls_batch
    kwargs = {"seed": 0} if cls in SEEDED else {}
    ref = make_attack(cls, **kwargs)(classifier, x, y)
    out = make_attack(cls, channels_last=True, **kwargs)(classifier, x, y)
    assert out.is_contiguous()
    # Convolutions may sum in another order in NHWC: allow rare sign flips of ~0 gradients.
    assert (out - ref).abs().gt(1e-5).float().mean() < 0.01


@pytest.mark.gpu
@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_cuda_bf16_channels_last(cls, classifier, cls_batch):
    model = classifier.cuda().to(memory_format=torch.channels_last)
    x, y = (t.cuda() for t in cls_batch)
    kwargs = {"seed": 0} if cls in SEEDED else {}
    attack = make_attack(cls, amp_dtype="bf16", channels_last=True, **kwargs)
    x_adv = attack(model, x, y)
    assert x_adv.device == x.device and x_adv.dtype == torch.float32 and x_adv.is_contiguous()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (budget(x_adv, x, attack.norm) <= attack.eps * (1 + 1e-5) + 1e-7).all()


def test_float64_inputs_keep_their_dtype(classifier, cls_batch):
    x, y = cls_batch
    x_adv = attacks.PGD(eps=0.03, steps=2)(classifier.double(), x.double(), y)
    assert x_adv.dtype == torch.float64


def test_losses_are_per_sample_and_masked():
    logits = torch.randn(2, 3, 4, 4)
    y = torch.randint(0, 3, (2, 4, 4))
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2] = True
    full = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(cross_entropy(logits, y), full.flatten(1).mean(1))
    assert torch.allclose(cross_entropy(logits, y, mask.float()), full[:, :2].flatten(1).mean(1))
    changed = logits.clone()
    changed[:, :, 2:] += torch.randn(2, 3, 2, 4)  # outside the mask
    assert torch.allclose(cross_entropy(changed, y, mask.float()), cross_entropy(logits, y, mask.float()))
