"""`python -m advmed.evaluate ckpt_path=... suite=card`: the robustness card of a classifier and of
a U-Net (corruptions, stain shifts, attacks; card.json / card.md / plots), its resume after a kill,
its refusals, and `advmed.collect` on a sweep of cards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.entrypoints.conftest import TINY, compose_config
from tests.shared_artifacts import build_once

# A small card: two corruptions (a blur and a brightness change) at severities 1 and 5, HED jitter,
# FGSM and a 3-step PGD at one eps.
SMALL = ["suite=card", "suite.corruptions=[defocus_blur,brightness_down]", "suite.severities=[1,5]",
         "suite.stain_shifts=[hed_jitter]", "suite.eps=[0.03]", "suite.attacks={fgsm:{},pgd:{steps:3}}"]
# A tiny U-Net that learns the liver in seconds (Adam: the paper's SGD at momentum 0.99 needs far more steps).
UNET = ["model=unet", "data=synthetic_ct", "debug=tiny", "trainer.max_epochs=8", "trainer.limit_train_batches=8",
        "trainer.limit_val_batches=2", "model.optimizer._target_=torch.optim.Adam", "model.optimizer.lr=0.01",
        "model.optimizer.momentum=null"]


def _card_cfg(ckpt: Path, out: Path, extra: list[str] = (), data: list[str] = TINY):
    # an override of a key SMALL sets replaces SMALL's (Hydra would merge a mapping into a mapping)
    small = [o for o in SMALL if not any(e.split("=")[0] == o.split("=")[0] for e in extra)]
    return compose_config("evaluate", [*data, f"ckpt_path={ckpt}", *small, *extra], out)


@pytest.fixture(scope="module")
def classifier_ckpt(trained_run) -> Path:
    return trained_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def classifier_card(classifier_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    from advmed.evaluate import evaluate

    out = tmp_path_factory.mktemp("card")
    metrics = evaluate(_card_cfg(classifier_ckpt, out))
    return out, metrics


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory) -> Path:
    from advmed.train import train

    def fit(run_dir: Path) -> Path:
        train(compose_config("train", UNET, run_dir))
        return run_dir

    return build_once(tmp_path_factory, "card_unet", fit) / "checkpoints" / "best.ckpt"


def test_card_of_a_classifier_has_every_condition_summary_and_plot(classifier_card):
    out, metrics = classifier_card
    card = json.loads((out / "card.json").read_text())
    assert card["schema"] == "advmed.card/1" and card["model"]["task"] == "classification"
    assert card["data"]["modality"] == "histology" and card["data"]["stain"] == "he"
    ids = [c["id"] for c in card["conditions"]]
    assert ids == ["clean", "corruption/defocus_blur/1", "corruption/defocus_blur/5", "corruption/brightness_down/1",
                   "corruption/brightness_down/5", "stain/hed_jitter/1", "stain/hed_jitter/5",
                   "attack/fgsm/eps=0.03", "attack/pgd/eps=0.03"]
    by_id = {c["id"]: c for c in card["conditions"]}
    n = by_id["clean"]["n"]
    assert n > 0 and all(c["n"] == n for c in card["conditions"])
    # the strongest blur costs accuracy; PGD is at least as strong as FGSM at the same eps
    clean = by_id["clean"]["metrics"]["acc"]
    assert by_id["corruption/defocus_blur/5"]["metrics"]["acc"] < clean
    assert by_id["attack/pgd/eps=0.03"]["metrics"]["acc"] <= by_id["attack/fgsm/eps=0.03"]["metrics"]["acc"]
    assert by_id["attack/pgd/eps=0.03"]["settings"]["steps"] == 3
    # the summary is computed from the conditions
    s = card["summary"]
    corrupted = [c["metrics"]["acc"] for c in card["conditions"] if c["kind"] == "corruption"]
    assert s["corruption_mean"]["acc"] == pytest.approx(sum(corrupted) / len(corrupted))
    worst = min(("defocus_blur", "brightness_down"), key=lambda k: s["per_corruption"][k])
    assert s["worst_corruption"]["name"] == worst
    errors = {k: sum(1 - by_id[f"corruption/{k}/{v}"]["metrics"]["balanced_acc"] for v in (1, 5)) / 2
              for k in ("defocus_blur", "brightness_down")}
    assert s["balanced_error"]["be"] == pytest.approx(sum(errors.values()) / 2)
    assert s["robust_worst"]["0.03"] == min(s["robust"]["fgsm"]["0.03"], s["robust"]["pgd"]["0.03"])
    # what the entry point returns is the flat summary advmed.collect tabulates
    assert metrics["card/clean/acc"] == clean and metrics["card/robust_worst/eps=0.03"] == s["robust_worst"]["0.03"]
    md = (out / "card.md").read_text()
    assert "## Corruptions (acc by severity)" in md and "defocus_blur" in md and "steps=3" in md
    for png in ("card_severity.png", "card_eps.png", "card_summary.png"):
        assert (out / png).stat().st_size > 1000


def test_balanced_accuracy_is_the_mean_recall_of_the_predictions():
    import torch
    from sklearn.metrics import balanced_accuracy_score

    from advmed.studies.card.counts import ConfusionCounts, balanced_accuracy

    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 1, 0, 2, 2, 1, 2, 0])
    counts = ConfusionCounts(4)  # class 3 absent: left out of the mean, as sklearn does
    counts.on_test_batch_end(None, None, {"y": y, "pred": pred, "adv_pred": torch.zeros_like(y)}, None, 0)
    assert balanced_accuracy(counts.clean) == pytest.approx(balanced_accuracy_score(y, pred))
    assert balanced_accuracy(counts.shifted) == pytest.approx(1 / 3)
    assert counts.images == 10


def test_killed_card_resumes_without_redoing_finished_conditions(classifier_ckpt, classifier_card, tmp_path, monkeypatch):
    from advmed.evaluate import evaluate
    from advmed.studies.card import runner

    real_measure, measured = runner.measure, []

    def measure_then_die(trainer, module, datamodule, condition, *args):
        if len(measured) == 4:
            raise KeyboardInterrupt  # as a kill would, after four conditions were written
        measured.append(condition.id)
        return real_measure(trainer, module, datamodule, condition, *args)

    monkeypatch.setattr(runner, "measure", measure_then_die)
    with pytest.raises(KeyboardInterrupt):
        evaluate(_card_cfg(classifier_ckpt, tmp_path))
    assert len(list((tmp_path / "conditions").glob("*.json"))) == 4 and not (tmp_path / "card.json").exists()

    def measure_counted(trainer, module, datamodule, condition, *args):
        measured.append(condition.id)
        return real_measure(trainer, module, datamodule, condition, *args)

    monkeypatch.setattr(runner, "measure", measure_counted)
    evaluate(_card_cfg(classifier_ckpt, tmp_path))
    assert len(measured) == 9 and len(set(measured)) == 9  # the rerun measured only the five left
    resumed = json.loads((tmp_path / "card.json").read_text())
    whole = json.loads((classifier_card[0] / "card.json").read_text())
    # every condition starts from the card's seed: the resumed card is the uninterrupted one
    assert [c["metrics"] for c in resumed["conditions"]] == [c["metrics"] for c in whole["conditions"]]


def test_card_refuses_a_folder_of_another_checkpoint_or_other_settings(classifier_ckpt, classifier_card, tmp_path):
    from advmed.evaluate import evaluate

    shutil.copytree(classifier_card[0] / "conditions", tmp_path / "conditions")
    stored = tmp_path / "conditions" / "clean.json"
    record = json.loads(stored.read_text())
    stored.write_text(json.dumps({**record, "card_key": "0123456789abcdef"}))
    with pytest.raises(ValueError, match="holds a card of another checkpoint"):
        evaluate(_card_cfg(classifier_ckpt, tmp_path))
    stored.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="attack/pgd/eps=0.03 with other settings"):
        evaluate(_card_cfg(classifier_ckpt, tmp_path, ["suite.attacks={fgsm:{},pgd:{steps:4}}"]))


@pytest.mark.parametrize("override, message", [
    (["suite.eps=[1.5]"], r"every eps must be in \(0, 1\]"),
    (["suite.severities=[0,6]"], "must be an integer from 1 to 5"),
    (["suite.corruptions=[no_such_blur]"], "no_such_blur"),
    (["suite.attacks={no_such_attack:{}}"], "no_such_attack"),
])
def test_bad_card_settings_are_clear_errors(classifier_ckpt, tmp_path, override, message):
    from advmed.evaluate import evaluate

    with pytest.raises(ValueError, match=message):
        evaluate(_card_cfg(classifier_ckpt, tmp_path, override))
    assert not (tmp_path / "conditions").exists()


def test_unknown_suite_names_the_known_ones(tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="card"):
        compose_config("evaluate", [*TINY, "ckpt_path=x.ckpt", "suite=robustness"], tmp_path)


def test_card_of_a_unet_reports_dice_iou_and_pixel_accuracy(unet_ckpt, tmp_path):
    from advmed.evaluate import evaluate

    data = ["data=synthetic_ct", "debug=tiny"]
    cfg = _card_cfg(unet_ckpt, tmp_path, ["suite.corruptions=[gaussian_blur,contrast_down]", "suite.eps=[0.05]",
                                          "suite.attacks=[fgsm]"], data=data)
    metrics = evaluate(cfg)
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["model"]["task"] == "segmentation" and card["data"]["modality"] == "ct"
    assert card["metrics"] == ["dice", "iou", "pixel_acc"]
    assert not any(c["kind"] == "stain" for c in card["conditions"])  # stain: auto, and CT is not H&E
    by_id = {c["id"]: c["metrics"] for c in card["conditions"]}
    assert by_id["attack/fgsm/eps=0.05"]["dice"] < by_id["clean"]["dice"]
    assert "balanced_error" not in card["summary"] and metrics["card/clean/iou"] == by_id["clean"]["iou"]
    assert "## Corruptions (dice by severity)" in (tmp_path / "card.md").read_text()


def test_stain_shift_on_ct_is_refused(unet_ckpt, tmp_path):
    from advmed.evaluate import evaluate

    cfg = _card_cfg(unet_ckpt, tmp_path, ["suite.stain=true", "suite.corruptions=none"], data=["data=synthetic_ct", "debug=tiny"])
    with pytest.raises(ValueError, match=r"stain shifts are defined for H&E \(3-channel RGB\) data"):
        evaluate(cfg)


def test_collect_tabulates_a_sweep_of_cards(classifier_card, tmp_path):
    from advmed.collect import collect

    card = json.loads((classifier_card[0] / "card.json").read_text())
    sweep = tmp_path / "multiruns" / "t"
    for i, ckpt in enumerate(("a.ckpt", "b.ckpt")):
        job = sweep / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["suite=card", f"ckpt_path={ckpt}"]))
        card["summary"]["clean"]["acc"] = 0.5 + i / 4
        (job / "card.json").write_text(json.dumps(card))
    result = collect(sweep, metric="card/clean/acc", x_key="ckpt_path")
    assert [job.metrics["card/clean/acc"] for job in result.table.jobs] == [0.5, 0.75]
    assert "card/robust_worst/eps=0.03" in result.table.metrics and result.plot.is_file()


def test_evaluate_measures_one_corruption_as_it_measures_an_attack(classifier_ckpt, classifier_card, tmp_path):
    from advmed.evaluate import evaluate

    cfg = compose_config("evaluate", [*TINY, f"ckpt_path={classifier_ckpt}", "attack=natural_shift",
                                      "attack.shift=defocus_blur", "attack.severity=5"], tmp_path)
    metrics = evaluate(cfg)
    card = json.loads((classifier_card[0] / "card.json").read_text())
    in_card = next(c for c in card["conditions"] if c["id"] == "corruption/defocus_blur/5")
    assert metrics["test/adv_acc"] == pytest.approx(in_card["metrics"]["acc"])  # the card's condition, to the digit
    assert "natural shift defocus_blur at severity 5" in (tmp_path / "report.md").read_text()


def test_eps_labels_read_as_grey_levels():
    from advmed.studies.card.plots import eps_label

    assert [eps_label(e) for e in (1 / 255, 8 / 255, 0.03, 0.1)] == ["1/255", "8/255", "0.03", "0.1"]


def test_a_multirun_of_cards_is_one_comparison_table(classifier_ckpt, tmp_path):
    """`python -m advmed.evaluate -m ... suite=card` over two seeds, then `advmed.collect` on the sweep:
    one row per card with its summary, and the mean ± sd over the seeds."""
    from advmed.collect import collect
    from tests.entrypoints.conftest import run_module

    sweep = tmp_path / "sweep"
    run_module("advmed.evaluate", ["-m", *TINY, f"ckpt_path={classifier_ckpt}", "suite=card",
                                   "suite.corruptions=[defocus_blur]", "suite.severities=[5]", "suite.stain=false",
                                   "suite.attacks=[fgsm]", "suite.eps=[0.03]", "seed=0,1",
                                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    result = collect(sweep)
    assert [job.overrides["seed"] for job in result.table.jobs] == ["0", "1"]
    assert all(job.status == "completed" and "card/fgsm/eps=0.03" in job.metrics for job in result.table.jobs)
    assert result.spread is not None and (sweep / "collect_over_seed.md").is_file()
