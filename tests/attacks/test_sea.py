"""SEA (Croce, Singh & Hein, ECCV 2024): its per-pixel losses against hand-computed values, the
progressive radius schedule, the worst-case selections (pixel accuracy, greedy mIoU), the mask,
strength against APGD-CE and PGD on the trained toy segmenter (with 20 steps instead of the
paper's 300, for speed), the attack contract, the seed and the bad-input messages.

SEA is an ensemble, not in ``advmed.attacks.__all__``: the contract properties that
test_properties.py checks for every attack are checked here.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import advmed.attacks as attacks
from advmed.attacks.core.segmentation_losses import (
    SEA_LOSSES,
    balanced_pixel_weights,
    class_overlaps,
    js_divergence,
    masked_cross_entropy,
    pixel_accuracy,
    sea_loss,
)
from advmed.attacks.ensembles.sea import SEA, greedy_miou_choice, miou_of, radius_stages
from tests.attacks.conftest import SEG_CLASSES, budget, miou_and_pixel_accuracy
from tests.conftest import CONFIG_DIR

EPS = 0.03
FAST = {"steps": 6}  # 1 + 1 + 4 iterations over the three stages


def _fast(**kwargs) -> SEA:
    return SEA(**{"eps": EPS, **FAST, **kwargs})


# --------------------------------------------------------------------------- losses by hand

# One image, 2 x 2 pixels, 3 classes; labels 0, 1, 2, 0.
LOGITS = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 3.0]], [[0.0, 0.0], [1.0, 0.0]]]])
LABELS = torch.tensor([[[0, 1], [2, 0]]])


def test_masked_cross_entropy_by_hand():
    # Pixel (0,0): logits (2, 0, 0), label 0, right: CE = log(e^2 + 2) - 2.
    # Pixel (0,1): logits (0, 1, 0), label 1, right: CE = log(e + 2) - 1.
    # Pixel (1,0): logits (0, 0, 1), label 2, right: CE = log(e + 2) - 1.
    # Pixel (1,1): logits (1, 3, 0), label 0, wrong (argmax 1): 0.
    a, b = math.log(math.e**2 + 2) - 2, math.log(math.e + 2) - 1
    expected = torch.tensor([[[a, b], [b, 0.0]]])
    assert torch.allclose(masked_cross_entropy(LOGITS, LABELS), expected, atol=1e-6)
    assert torch.allclose(sea_loss("mask-ce", LOGITS, LABELS), torch.tensor([(a + 2 * b) / 4]), atol=1e-6)
    # Only the pixels of the mask count, and the mean is over them.
    weight = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert torch.allclose(sea_loss("mask-ce", LOGITS, LABELS, weight), torch.tensor([(a + b) / 3]), atol=1e-6)


def test_balanced_weights_by_hand():
    # Class counts 2, 1, 1: inverse 1/2, 1, 1, normalised by 2.5 -> 0.2, 0.4, 0.4.
    per_image = balanced_pixel_weights(LABELS, None, 3)
    assert torch.allclose(per_image, torch.tensor([[[0.2, 0.4], [0.4, 0.2]]]))
    # With a mask (pixel (1,1) out): counts 1, 1, 1 -> 1/3 each.
    weight = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert torch.allclose(balanced_pixel_weights(LABELS, weight, 3)[weight > 0], torch.full((3,), 1 / 3))
    # Each image is balanced on its own: a second image does not change the first one's weights.
    two = balanced_pixel_weights(torch.cat([LABELS, torch.zeros_like(LABELS)]), None, 3)
    assert torch.equal(two[0], per_image[0]) and torch.allclose(two[1], torch.ones(2, 2))
    # Given class weights (the reference's dataset weights) are looked up per pixel.
    fixed = balanced_pixel_weights(LABELS, None, 3, [0.1, 0.3, 0.6])
    assert torch.allclose(fixed, torch.tensor([[[0.1, 0.3], [0.6, 0.1]]]))
    a, b = math.log(math.e**2 + 2) - 2, math.log(math.e + 2) - 1
    value = sea_loss("mask-ce-bal", LOGITS, LABELS, pixel_weight=fixed)
    assert torch.allclose(value, torch.tensor([(0.1 * a + 0.3 * b + 0.6 * b) / 4]), atol=1e-6)


def test_js_divergence_follows_its_definition():
    """JS(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2 and q one-hot, from the
    definition, on the hand tensor and on random logits."""
    for logits, labels in [(LOGITS, LABELS), (3 * torch.randn(2, 4, 3, 5), torch.randint(0, 4, (2, 3, 5)))]:
        p = logits.double().softmax(1)
        q = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).double()
        m = (p + q) / 2
        kl_pm = (p * (p / m).log()).sum(1)
        kl_qm = torch.where(q > 0, q * (q / m).log(), torch.zeros_like(q)).sum(1)
        expected = ((kl_pm + kl_qm) / 2).float()
        assert torch.allclose(js_divergence(logits, labels), expected, atol=1e-6)
    # Bounds: 0 for a sure right pixel, ln 2 for a sure wrong one.
    sure = torch.tensor([[[[60.0]], [[-60.0]]]])
    assert js_divergence(sure, torch.tensor([[[0]]])).item() == pytest.approx(0.0, abs=1e-6)
    assert js_divergence(sure, torch.tensor([[[1]]])).item() == pytest.approx(math.log(2), abs=1e-6)
    # Finite gradient even where p_y underflows to 0 (the reference's m.log() is -inf there).
    far = torch.tensor([[[[200.0]], [[-200.0]]]], requires_grad=True)
    js_divergence(far, torch.tensor([[[1]]])).sum().backward()
    assert torch.isfinite(far.grad).all()
    assert torch.allclose(sea_loss("js", LOGITS, LABELS), js_divergence(LOGITS, LABELS).mean((1, 2)))


def test_accuracy_and_overlaps_by_hand():
    pred = LOGITS.argmax(1)  # [[0, 1], [2, 1]]
    assert torch.allclose(pixel_accuracy(pred, LABELS), torch.tensor([0.75]))
    weight = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert torch.allclose(pixel_accuracy(pred, LABELS, weight), torch.tensor([0.5]))
    inter, union = class_overlaps(pred, LABELS, None, 3)
    # class 0: true {00, 11}, predicted {00}; class 1: true {01}, predicted {01, 11}; class 2: {10} both.
    assert inter.tolist() == [[1.0, 1.0, 1.0]] and union.tolist() == [[2.0, 2.0, 1.0]]
    inter, union = class_overlaps(pred, LABELS, weight, 3)  # pixels 00 and 11 only
    assert inter.tolist() == [[1.0, 0.0, 0.0]] and union.tolist() == [[2.0, 1.0, 0.0]]
    assert miou_of(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([2.0, 1.0, 0.0])).item() == pytest.approx(0.25)


# --------------------------------------------------------------------------- radius schedule


def test_radius_stages():
    assert radius_stages(300) == [(90, 2.0), (90, 1.5), (120, 1.0)]
    assert radius_stages(100) == [(30, 2.0), (30, 1.5), (40, 1.0)]
    assert radius_stages(10) == [(3, 2.0), (3, 1.5), (4, 1.0)]
    assert radius_stages(3) == [(3, 1.0)]  # int(0.9) = 0: stages without iterations are dropped
    assert radius_stages(7, [[1.0, 1.0]]) == [(7, 1.0)]


def test_each_iteration_stays_in_its_stage_radius(segmenter, seg_batch):
    """300 steps: every forward's input (clean, then per stage its start and 90 / 90 / 120
    iterates) lies within that stage's radius 2, 1.5, 1 eps, and reaches it."""
    x, y = seg_batch
    seen = []
    handle = segmenter.register_forward_pre_hook(lambda m, inp: seen.append((inp[0] - x).abs().amax().item()))
    x_adv = SEA(eps=EPS, steps=300, losses=["js"], early_stop=False)(segmenter, x, y)
    handle.remove()
    assert len(seen) == 1 + 91 + 91 + 121 and seen[0] == 0
    for (first, last), factor in [((1, 92), 2.0), ((92, 183), 1.5), ((183, 304), 1.0)]:
        stage = seen[first:last]
        assert max(stage) <= factor * EPS * (1 + 1e-5) and max(stage) >= 0.99 * factor * EPS, factor
    assert budget(x_adv, x, "linf").max() <= EPS * (1 + 1e-5)


# --------------------------------------------------------------------------- worst case


@pytest.fixture(scope="module")
def toy_runs(toy_segmentation):
    """SEA on the 16 toy slices (9 steps, eps 0.1), its mIoU variant, and each loss run alone. eps 0.1 and
    all 16 slices: at a smaller budget one loss may win on every image on some CPUs (their float sums
    differ), which would leave the per-image choice untested."""
    model, x, y = toy_segmentation
    singles = {name: SEA(eps=0.1, steps=9, losses=[name]).run(model, x, y) for name in SEA_LOSSES}
    by_acc = SEA(eps=0.1, steps=9).run(model, x, y)
    by_miou = SEA(eps=0.1, steps=9, select="miou").run(model, x, y)
    return model, x, y, singles, by_acc, by_miou


def _which_run(x_adv, singles):
    """Per image, the index of the single-loss run whose image SEA returned."""
    return [
        next(k for k, name in enumerate(SEA_LOSSES) if torch.equal(x_adv[i], singles[name].x_adv[i]))
        for i in range(x_adv.shape[0])
    ]


def test_worst_case_is_the_lowest_accuracy_run_per_image(toy_runs):
    """Each loss's run inside the ensemble equals SEA(losses=[that loss]) (own generator per loss);
    the ensemble keeps, per image, the image of the run with the lowest pixel accuracy."""
    model, x, y, singles, result, _ = toy_runs
    accs = torch.stack([singles[name].stats["worst_pixel_acc"] for name in SEA_LOSSES])
    for name in SEA_LOSSES:
        key = f"pixel_acc_after_{name.replace('-', '_')}"
        assert torch.equal(result.stats[key], singles[name].stats[key])
        assert torch.equal(singles[name].stats[key], singles[name].stats["worst_pixel_acc"])
    best = accs.argmin(0)
    assert len(set(best.tolist())) > 1  # the losses win on different images: the choice matters
    assert _which_run(result.x_adv, singles) == best.tolist()
    assert torch.equal(result.stats["worst_pixel_acc"], accs.amin(0))
    with torch.no_grad():
        assert torch.allclose(pixel_accuracy(model(result.x_adv).argmax(1), y), accs.amin(0))


def test_select_miou_keeps_the_greedy_choice(toy_runs):
    model, x, y, singles, by_acc, by_miou = toy_runs
    # Same runs, another choice per image: the per-loss figures agree.
    for key in by_acc.stats:
        if key != "worst_pixel_acc":
            assert torch.equal(by_acc.stats[key], by_miou.stats[key])
    assert (by_miou.stats["worst_pixel_acc"] >= by_acc.stats["worst_pixel_acc"]).all()
    # The choice is the greedy one on the runs' per-image class overlaps.
    with torch.no_grad():
        overlaps = [class_overlaps(model(singles[n].x_adv).argmax(1), y, None, 3) for n in SEA_LOSSES]
    inter, union = torch.stack([o[0] for o in overlaps]), torch.stack([o[1] for o in overlaps])
    choice = _which_run(by_miou.x_adv, singles)
    assert choice == greedy_miou_choice(inter, union).tolist()
    # ... which never ends above the start (Mask-CE-Bal everywhere).
    miou_first = miou_and_pixel_accuracy(model, singles["mask-ce-bal"].x_adv, y)[0]
    assert miou_and_pixel_accuracy(model, by_miou.x_adv, y)[0] <= miou_first + 1e-6


def test_greedy_miou_choice_by_hand():
    # Two attacks, two images of 10 + 5 pixels of classes 0 and 1. Attack 0 leaves both images
    # right; attack 1 turns class 1 of image 0 into class 0 and changes nothing on image 1 (a tie:
    # no switch).
    inter = torch.tensor([[[10.0, 5.0], [10.0, 5.0]], [[10.0, 0.0], [10.0, 5.0]]])
    union = torch.tensor([[[10.0, 5.0], [10.0, 5.0]], [[15.0, 5.0], [10.0, 5.0]]])
    assert greedy_miou_choice(inter, union).tolist() == [1, 0]
    # One image of 10 pixels, 8 of class 0 and 2 of class 1. Attack 0 predicts class 0 everywhere
    # (pixel accuracy 0.8; IoU 0.8 and 0: mIoU 0.4); attack 1 gets class 1 right but 3 pixels of
    # class 0 wrong (pixel accuracy 0.7; IoU 5/8 and 2/5: mIoU 0.51). The worst case for pixel
    # accuracy is attack 1, for mIoU attack 0, from either start.
    inter = torch.tensor([[[8.0, 0.0]], [[5.0, 2.0]]])
    union = torch.tensor([[[10.0, 2.0]], [[8.0, 5.0]]])
    assert greedy_miou_choice(inter, union, start=0).tolist() == [0]
    assert greedy_miou_choice(inter, union, start=1).tolist() == [0]


def _set_miou(inter, union, choice):
    images = torch.arange(choice.shape[0])
    return miou_of(inter[choice, images].sum(0), union[choice, images].sum(0)).item()


def test_greedy_miou_choice_ends_where_no_switch_helps():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        inter = torch.randint(0, 20, (3, 6, 4), generator=g).double()
        union = inter + torch.randint(0, 20, (3, 6, 4), generator=g).double()
        choice = greedy_miou_choice(inter, union)
        final = _set_miou(inter, union, choice)
        assert final <= _set_miou(inter, union, torch.zeros(6, dtype=torch.long))
        for j in range(6):
            for attack in range(3):
                switched = choice.clone()
                switched[j] = attack
                assert _set_miou(inter, union, switched) >= final - 1e-12


# --------------------------------------------------------------------------- strength


def test_sea_is_at_least_as_strong_as_apgd_ce_and_pgd(toy_segmentation):
    """At equal eps and 20 iterations each (the paper: 300 for SEA, reduced for speed)."""
    model, x, y = toy_segmentation
    eps, steps = 0.04, 20
    miou_clean, acc_clean = miou_and_pixel_accuracy(model, x, y)
    sea = SEA(eps=eps, steps=steps).run(model, x, y)
    miou_sea, acc_sea = miou_and_pixel_accuracy(model, sea.x_adv, y)
    for other in (attacks.APGD(eps=eps, steps=steps), attacks.PGD(eps=eps, steps=steps, seed=0)):
        miou_other, acc_other = miou_and_pixel_accuracy(model, other(model, x, y), y)
        assert miou_sea <= miou_other < miou_clean and acc_sea <= acc_other < acc_clean, type(other).__name__
    assert sea.stats["worst_pixel_acc"].mean().item() == pytest.approx(acc_sea, abs=1e-6)


# --------------------------------------------------------------------------- mask, contract, seed


def test_pixels_outside_the_mask_do_not_matter(segmenter, seg_batch):
    x, y = seg_batch
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, 2:8, 1:9] = True
    other = y.clone()
    other[~mask] = (y[~mask] + 1) % SEG_CLASSES  # other labels where nothing may count
    a = _fast().run(segmenter, x, y, mask=mask)
    b = _fast().run(segmenter, x, other, mask=mask)
    assert torch.equal(a.x_adv, b.x_adv)
    assert all(torch.equal(a.stats[k], b.stats[k]) for k in a.stats)
    with torch.no_grad():
        pred = segmenter(a.x_adv).argmax(1)
    assert torch.allclose(a.stats["worst_pixel_acc"], pixel_accuracy(pred, y, mask.float()))
    # An image with no pixel in the mask has no accuracy: NaN, left out of the logged mean.
    mask[0] = False
    assert _fast().run(segmenter, x, y, mask=mask).stats["worst_pixel_acc"][0].isnan()


def test_contract_range_budget_mode_params_and_stats(segmenter, seg_batch):
    x, y = seg_batch
    segmenter.train()
    segmenter[2].eval()  # a frozen BatchNorm inside a training model stays frozen
    before = {name: m.training for name, m in segmenter.named_modules()}
    state = {k: v.clone() for k, v in segmenter.state_dict().items()}
    seen = []
    hook = segmenter.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    result = _fast().run(segmenter, x, y)
    hook.remove()
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, x)
    assert (budget(x_adv, x, "linf") <= EPS * (1 + 1e-5)).all()
    assert seen and not any(seen)
    assert {name: m.training for name, m in segmenter.named_modules()} == before
    assert all(torch.equal(v, state[k]) for k, v in segmenter.state_dict().items())
    assert all(p.grad is None for p in segmenter.parameters())
    assert sorted(result.stats) == sorted(
        ["worst_pixel_acc", "pixel_acc_after_mask_ce_bal", "pixel_acc_after_mask_ce", "pixel_acc_after_js"]
    )
    assert all(v.shape == (4,) and v.dtype == torch.float32 for v in result.stats.values())
    assert isinstance(_fast()(segmenter, x, y), torch.Tensor)  # calling returns x_adv only


def test_seed_makes_it_deterministic(segmenter, seg_batch):
    x, y = seg_batch
    torch.manual_seed(1)
    first = _fast(seed=3)(segmenter, x, y)
    torch.manual_seed(2)
    assert torch.equal(_fast(seed=3)(segmenter, x, y), first)
    assert not torch.equal(_fast(seed=4)(segmenter, x, y), first)
    torch.manual_seed(5)
    unseeded = _fast(seed=None)(segmenter, x, y)
    torch.manual_seed(5)
    assert torch.equal(_fast(seed=None)(segmenter, x, y), unseeded)


def test_bf16_and_channels_last(segmenter, seg_batch):
    x, y = seg_batch
    out = _fast(amp_dtype="bf16")(segmenter, x, y)
    assert out.dtype == torch.float32 and (budget(out, x, "linf") <= EPS * (1 + 1e-5)).all()
    ref = _fast()(segmenter, x, y)
    cl = _fast(channels_last=True)(segmenter, x, y)
    assert cl.is_contiguous()
    # Convolutions may sum in another order in NHWC: allow rare sign flips of ~0 gradients.
    assert (cl - ref).abs().gt(1e-5).float().mean() < 0.05


# --------------------------------------------------------------------------- bad input, config


def test_classification_logits_are_refused(classifier, cls_batch):
    x, y = cls_batch
    with pytest.raises(ValueError, match=r"SEA attacks segmentation models .* got logits \(8, 4\)"):
        _fast()(classifier, x, y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 8}, r"eps must be in \[0, 1\].*did you mean 8/255"),
        ({"eps": -0.1}, r"eps must be in \[0, 1\]"),
        ({"steps": 0}, r"steps must be an integer >= 1, got 0"),
        ({"losses": ["ce"]}, r"losses must be distinct names from \['mask-ce-bal', 'mask-ce', 'js'\], got \['ce'\]"),
        ({"losses": []}, r"losses must be distinct names"),
        ({"losses": ["js", "js"]}, r"losses must be distinct names"),
        ({"schedule": [[0.5, 2.0], [0.4, 1.0]]}, r"fractions > 0 summing to 1"),
        ({"schedule": [[0.5, 1.0], [0.5, 2.0]]}, r"a last factor of 1"),
        ({"schedule": [0.3, 0.7]}, r"schedule must be \[\[fraction, radius factor\], \.\.\.\]"),
        ({"select": "dice"}, r"select must be one of \('pixel_acc', 'miou'\), got 'dice'"),
        ({"class_weights": [0, 0]}, r"class_weights must be a list of K weights >= 0"),
        ({"rho": 0}, r"rho must be in \(0, 1\], got 0"),
        ({"seed": 1.5}, r"seed must be an integer or null"),
        ({"targeted": True}, r"SEA takes no \['targeted'\]"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SEA(**{"eps": EPS, **kwargs})


def test_class_weights_must_match_the_classes(segmenter, seg_batch):
    x, y = seg_batch
    with pytest.raises(ValueError, match=r"class_weights has 2 values but the model has K=3 classes"):
        _fast(class_weights=[0.5, 0.5])(segmenter, x, y)
    assert _fast(class_weights=[0.2, 0.3, 0.5]).run(segmenter, x, y).x_adv.shape == x.shape


def test_config_lists_every_constructor_arg_and_builds():
    cfg = OmegaConf.load(CONFIG_DIR / "attack" / "sea.yaml")
    args = set(inspect.signature(SEA.__init__).parameters) - {"self", "refused"}
    assert set(cfg) - {"_target_"} == args
    attack = attacks.build_attack(cfg)
    assert type(attack) is SEA and attack.steps == 300 and attack.losses == SEA_LOSSES
    assert radius_stages(attack.steps, attack.schedule) == [(90, 2.0), (90, 1.5), (120, 1.0)]
    assert attacks.build_attack(OmegaConf.merge(cfg, {"eps": "8/255"})).eps == pytest.approx(8 / 255)
    assert "SEA" not in attacks.__all__ and attacks.SEA is SEA  # an ensemble: outside the contract list
