"""PGD attack-success study: exact values on a hand-made model, agreement with separate PGD-k
runs on a trained ResNet, outputs, the Hydra entry point, the Fig. 3d aggregation, bad input."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advmed.attacks import APGD, PGD
from advmed.models import ClassifierModule
from advmed.studies.pgd_study import run_pgd_study, run_study
from advmed.studies.pgd_study_settings import ConfidenceBins, StudySettings
from advmed.study import study
from advmed.utils.tables import Table, write_csv
from tests.conftest import CONFIG_DIR, REPO_ROOT
from tests.studies.conftest import TINY_DATA


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class RecordingLogger(TensorBoardLogger):
    """A TensorBoard logger whose SummaryWriter records calls (tensorboard itself is not installed)."""

    def __init__(self) -> None:  # no super().__init__: it would require the tensorboard package
        self.texts: dict[str, str] = {}
        self.images: dict[str, tuple] = {}

    @property
    def experiment(self):
        return self

    def add_text(self, key, text) -> None:
        self.texts[key] = text

    def add_image(self, key, image, dataformats) -> None:
        self.images[key] = image.shape


# --------------------------------------------------------------------------- hand-made model


class ThresholdModel(nn.Module):
    """Known-answer classifier of 2-channel images (3 classes).

    Logit 1 = K * (mean of channel 0 - 0.5) against logit 0 = 0. PGD without random start moves
    every pixel of channel 0 by ALPHA per step toward 0.5 (sign of a uniform gradient), so an
    image at distance d from 0.5 is misclassified after step i iff d < min(i * ALPHA, eps).
    Logit 2 = K * mean(channel 1) - 10 is detached, so the attack leaves channel 1 alone;
    channel 1 = 0.25 makes logit 2 = 0 and the clean confidence drops below 0.5.
    """

    K = 40.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.K * (x[:, 0].mean((1, 2)) - 0.5)
        third = self.K * x[:, 1].detach().mean((1, 2)) - 10
        return torch.stack([torch.zeros_like(s), s, third], 1)


ALPHA = 0.01
# (distance from 0.5, side it lies on = clean prediction, label, channel 1). Distances avoid
# multiples of ALPHA and confidences avoid bin edges by a safe margin.
CASES = [
    (0.004, 1, 1, 0.0), (0.012, 0, 0, 0.0), (0.018, 1, 1, 0.0), (0.026, 0, 0, 0.0),
    (0.034, 1, 1, 0.0), (0.045, 0, 0, 0.0), (0.065, 1, 1, 0.0), (0.1, 0, 0, 0.0),
    (0.004, 1, 1, 0.25),  # eligible, clean confidence 0.38: in no confidence bin
    (0.1, 1, 0, 0.0), (0.012, 0, 2, 0.0), (0.004, 0, 1, 0.0),  # natively misclassified
]


def threshold_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.empty(len(CASES), 2, 4, 4)
    for n, (d, side, _, u) in enumerate(CASES):
        x[n, 0] = 0.5 + d if side == 1 else 0.5 - d
        x[n, 1] = u
    return x, torch.tensor([label for _, _, label, _ in CASES])


def expected_fooled(eps: float, step: int) -> torch.Tensor:
    return torch.tensor([side == label and d < min(step * ALPHA, eps) for d, side, label, _ in CASES])


def expected_confidence() -> torch.Tensor:
    logits = torch.tensor(
        [[0.0, ThresholdModel.K * (d if side else -d), ThresholdModel.K * u - 10] for d, side, _, u in CASES],
        dtype=torch.float64,
    )
    return logits.softmax(1).amax(1)


def test_hand_made_model_gives_the_known_rates_and_excludes_misclassified(tmp_path):
    x, y = threshold_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=5)  # uneven last batch
    settings = StudySettings(eps=[0.08, 0.02, 0.04], max_iter=6, alpha=ALPHA, random_start=False)
    result = run_study(ThresholdModel(), loader, settings, tmp_path)
    eligible = torch.tensor([side == label for _, side, label, _ in CASES])
    n_eligible = int(eligible.sum())
    assert n_eligible == 9 and result.summary["n_natively_misclassified"] == 3
    assert torch.equal(result.records.eligible, eligible)
    assert settings.eps == (0.02, 0.04, 0.08)

    iterations = {(float(r["eps"]), int(r["iteration"])): r for r in read_csv(tmp_path / "iterations.csv")}
    assert len(iterations) == 3 * 6
    for eps in settings.eps:
        for step in range(1, 7):
            row = iterations[(eps, step)]
            want = int(expected_fooled(eps, step).sum())
            assert int(row["n_eligible"]) == n_eligible
            assert int(row["n_fooled"]) == want, (eps, step)
            assert float(row["success_rate"]) == pytest.approx(want / n_eligible)
    # Natively misclassified images are never counted as fooled, though their prediction != y.
    assert not result.records.fooled[:, :, ~eligible].any()

    sweep = read_csv(tmp_path / "eps_sweep.csv")
    assert [float(r["eps"]) for r in sweep] == [0.02, 0.04, 0.08]
    assert [int(r["n_fooled"]) for r in sweep] == [4, 6, 7]  # eps 0.08 is capped by 6 steps of 0.01
    assert all(float(r["alpha"]) == ALPHA for r in sweep)

    confidence = expected_confidence()
    in_bins = eligible & (confidence >= 0.5)
    bins = {(float(r["eps"]), int(r["bin"])): r for r in read_csv(tmp_path / "confidence_bins.csv")}
    assert len(bins) == 3 * 10
    for eps in settings.eps:
        final = expected_fooled(eps, 6)
        for b in range(10):
            members = in_bins & (confidence >= 0.5 + 0.05 * b) & (confidence < 0.55 + 0.05 * b)
            row = bins[(eps, b)]
            assert int(row["n_eligible"]) == int(members.sum()), (eps, b)
            assert int(row["n_fooled"]) == int((final & members).sum()), (eps, b)
        assert sum(int(bins[(eps, b)]["n_eligible"]) for b in range(10)) == int(in_bins.sum()) == 8
    assert result.summary["n_eligible_below_confidence_bins"] == 1


def test_confidence_bins_are_half_open_with_the_last_one_closed():
    bins = ConfidenceBins(low=0.5, high=1.0, n=10)
    index = bins.assign(torch.tensor([0.49, 0.5, 0.5499, 0.55, 0.97, 1.0]))
    assert index.tolist() == [-1, 0, 0, 1, 9, 9]


# --------------------------------------------------------------------------- trained model

SEED = 7
TRAINED_EPS = (0.002, 0.004, 0.008, 0.016)


@pytest.fixture(scope="module")
def trained_study(trained_classifier, histology, tmp_path_factory):
    logger = RecordingLogger()
    out = tmp_path_factory.mktemp("study")
    settings = StudySettings(eps=TRAINED_EPS, max_iter=3, seed=SEED)
    return run_study(trained_classifier, histology.test_dataloader(), settings, out, [logger]), out, logger


def test_study_equals_separate_pgd_runs(trained_study, trained_classifier, histology):
    result, _, _ = trained_study
    records = result.records
    n_fooled = {(r[0], r[1]): r[3] for r in result.tables["iterations"].rows}
    for e in (0, 2):
        eps, alpha = TRAINED_EPS[e], records.alpha[e]
        assert alpha == pytest.approx(2.5 * eps / 3)
        for k in (1, 3):
            attack = PGD(eps, alpha=alpha, steps=k, seed=SEED)
            fooled = []
            for x, y in histology.test_dataloader():  # same batches: the seeded start depends on the shape
                x_adv = attack(trained_classifier, x, y)
                with torch.no_grad():
                    clean, adv = trained_classifier(x).argmax(1), trained_classifier(x_adv).argmax(1)
                fooled.append((clean == y) & (adv != y))
            fooled = torch.cat(fooled)
            assert torch.equal(records.fooled[e, k - 1], fooled), (eps, k)
            assert n_fooled[(eps, k)] == int(fooled.sum())
        assert result.tables["eps_sweep"].rows[e][4] == n_fooled[(eps, 3)]


def test_confidence_bin_counts_match_the_clean_predictions(trained_study, trained_classifier, histology):
    result, _, _ = trained_study
    x, y = (torch.cat(t) for t in zip(*histology.test_dataloader()))
    with torch.no_grad():
        probs = trained_classifier(x).softmax(1)
    confidence, eligible = probs.amax(1), probs.argmax(1) == y
    assert 0 < int(eligible.sum()) < len(y)  # the test needs both kinds of image
    rows = [r for r in result.tables["confidence_bins"].rows if r[0] == TRAINED_EPS[0]]
    for _, b, low, high, n, _, _ in rows:
        upper = confidence <= high if b == 9 else confidence < high
        assert n == int((eligible & (confidence >= low) & upper).sum())
    assert sum(r[4] for r in rows) == int((eligible & (confidence >= 0.5)).sum())
    assert result.summary["n_eligible_below_confidence_bins"] == int((eligible & (confidence < 0.5)).sum())


def test_success_grows_with_eps_on_the_trained_model(trained_study):
    result, _, _ = trained_study
    rates = result.tables["eps_sweep"].column("success_rate")
    n_eligible = result.tables["eps_sweep"].rows[0][3]
    assert all(b >= a - 1 / n_eligible for a, b in zip(rates, rates[1:])), rates  # within one image
    assert rates[-1] > rates[0], rates


def test_outputs_are_written_and_logged(trained_study):
    result, out, logger = trained_study
    expected = {
        "eps_sweep.csv": (["eps", "alpha", "n_images", "n_eligible", "n_fooled", "success_rate",
                           "apgd_n_fooled", "apgd_success_rate"], 4),
        "iterations.csv": (["eps", "iteration", "n_eligible", "n_fooled", "success_rate"], 4 * 3),
        "confidence_bins.csv": (["eps", "bin", "conf_low", "conf_high", "n_eligible", "n_fooled", "success_rate"], 4 * 10),
    }
    for name, (columns, n_rows) in expected.items():
        rows = read_csv(out / name)
        assert list(rows[0]) == columns and len(rows) == n_rows
    for png in ("fig3a_success_vs_eps.png", "fig3b_success_vs_iterations.png", "fig3c_success_vs_confidence.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and min(image.size) > 100
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 9 * TINY_DATA["test_per_class"]
    assert sorted(logger.texts) == ["study/confidence_bins", "study/eps_sweep", "study/iterations"]
    assert sorted(logger.images) == ["study/success_vs_confidence", "study/success_vs_eps", "study/success_vs_iterations"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


# --------------------------------------------------------------------------- APGD beside PGD


def test_apgd_on_the_hand_made_model_gives_the_known_rates(tmp_path):
    """APGD's first step is 2 * eps, clipped to the eps-ball: on the threshold model it moves
    channel 0 by eps at once, so APGD-k fools exactly the eligible images with d < eps, while
    PGD-k with step ALPHA reaches only min(k * ALPHA, eps)."""
    x, y = threshold_data()
    settings = StudySettings(eps=[0.02, 0.04, 0.08], max_iter=6, alpha=ALPHA, random_start=False)
    result = run_study(ThresholdModel(), DataLoader(TensorDataset(x, y), batch_size=5), settings, tmp_path)
    eligible = torch.tensor([side == label for _, side, label, _ in CASES])
    want = [torch.tensor([side == label and d < eps for d, side, label, _ in CASES]) for eps in settings.eps]
    assert torch.equal(result.records.apgd_fooled, torch.stack(want))
    sweep = read_csv(tmp_path / "eps_sweep.csv")
    assert [int(r["n_fooled"]) for r in sweep] == [4, 6, 7]
    assert [int(r["apgd_n_fooled"]) for r in sweep] == [4, 6, 8]  # eps 0.08: PGD-6 is capped at 0.06, APGD is not
    assert [float(r["apgd_success_rate"]) for r in sweep] == pytest.approx([4 / 9, 6 / 9, 8 / 9])
    assert not result.records.apgd_fooled[:, ~eligible].any()  # natively misclassified: never counted
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["apgd_success_rate"] == pytest.approx({"0.02": 4 / 9, "0.04": 6 / 9, "0.08": 8 / 9})
    assert summary["settings"]["apgd"] is True
    assert summary["attacks"]["apgd_success_rate"].startswith("APGD-CE-6 ") and "L-inf" in summary["attacks"]["apgd_success_rate"]


def test_apgd_column_equals_a_separate_apgd_run(trained_study, trained_classifier, histology):
    result, _, _ = trained_study
    n_fooled = result.tables["eps_sweep"].column("apgd_n_fooled")
    for e in (0, 2):
        # A full run (no early stop): the study's APGD lets fooled images go, which must change no count.
        attack = APGD(TRAINED_EPS[e], norm="Linf", steps=3, n_restarts=1, loss="ce", seed=SEED, early_stop=False)
        fooled = []
        for x, y in histology.test_dataloader():  # same batches: the seeded start depends on the shape
            x_adv = attack.run(trained_classifier, x, y).x_adv
            with torch.no_grad():
                clean, adv = trained_classifier(x).argmax(1), trained_classifier(x_adv).argmax(1)
            fooled.append((clean == y) & (adv != y))
        fooled = torch.cat(fooled)
        assert torch.equal(result.records.apgd_fooled[e], fooled), TRAINED_EPS[e]
        assert n_fooled[e] == int(fooled.sum())


def test_apgd_is_as_strong_as_pgd_at_equal_iterations(trained_study):
    """At 3 iterations APGD's step-size schedule has no room to act, so it may lose an image to PGD
    at one eps (seen on some CPUs); it must not lose more, and must break something."""
    result, out, _ = trained_study
    sweep = read_csv(out / "eps_sweep.csv")
    pgd = [float(r["success_rate"]) for r in sweep]
    apgd = [float(r["apgd_success_rate"]) for r in sweep]
    one_image = 1 / int(sweep[0]["n_eligible"])
    assert all(0 <= rate <= 1 for rate in pgd + apgd), (pgd, apgd)
    assert all(a >= p - one_image - 1e-9 for p, a in zip(pgd, apgd)), (pgd, apgd)
    assert apgd[-1] > 0, apgd  # a column of zeros would pass the inequality by default
    summary = json.loads((out / "summary.json").read_text())
    assert summary["apgd_success_rate"] == pytest.approx({f"{eps:g}": rate for eps, rate in zip(TRAINED_EPS, apgd)})


class NoAPGD:
    def __init__(self, *args, **kwargs) -> None:
        raise AssertionError("APGD was built although study.apgd=false")


def test_apgd_off_leaves_out_the_column_and_the_attack(tmp_path, monkeypatch):
    monkeypatch.setattr("advmed.studies.pgd_study_records.APGD", NoAPGD)
    x, y = threshold_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    with pytest.raises(AssertionError, match="APGD was built"):  # the stub stands where the study builds APGD
        run_study(ThresholdModel(), loader, StudySettings(eps=[0.02], max_iter=2, alpha=ALPHA), tmp_path / "on")
    settings = StudySettings(eps=[0.02, 0.04], max_iter=2, alpha=ALPHA, random_start=False, apgd=False)
    result = run_study(ThresholdModel(), loader, settings, tmp_path)
    assert result.records.apgd_fooled is None
    assert list(read_csv(tmp_path / "eps_sweep.csv")[0]) == ["eps", "alpha", "n_images", "n_eligible", "n_fooled",
                                                             "success_rate"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "apgd_success_rate" not in summary and summary["settings"]["apgd"] is False
    assert list(summary["attacks"]) == ["success_rate"]
    assert Image.open(tmp_path / "fig3a_success_vs_eps.png").format == "PNG"


def test_apgd_switch_is_a_config_value():
    cfg = compose_cfg("study", ["ckpt_path=unused"])
    assert cfg.study.apgd is True
    cfg = compose_cfg("train", ["experiment=pgd_study/synthetic", "study.apgd=false"])
    assert StudySettings.from_config(cfg.study).apgd is False


def test_max_images_caps_the_study(tmp_path):
    x, y = threshold_data()
    settings = StudySettings(eps=[0.02], max_iter=2, alpha=ALPHA, random_start=False, max_images=7)
    result = run_study(ThresholdModel(), DataLoader(TensorDataset(x, y), batch_size=5), settings, tmp_path)
    assert result.summary["n_images"] == 7 and result.records.fooled.shape == (1, 2, 7)  # cuts the 2nd batch
    assert torch.equal(result.records.labels, y[:7])


# --------------------------------------------------------------------------- entry point and configs


def compose_cfg(config_name: str, overrides: list[str], **kwargs):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, **kwargs)


def tiny_data_overrides() -> list[str]:
    return [f"data.{k}={v}" for k, v in TINY_DATA.items()]


def test_entry_point_runs_the_study(trained_checkpoint, tmp_path):
    cfg = compose_cfg("study", [
        f"ckpt_path={trained_checkpoint}", f"paths.output_dir={tmp_path}", "trainer=cpu",
        "study.eps=[0.004,0.008]", "study.max_iter=2", "study.max_images=20", *tiny_data_overrides(),
    ])
    metrics = study(cfg)
    assert sorted(metrics) == ["study/apgd_success_rate/eps=0.004", "study/apgd_success_rate/eps=0.008",
                               "study/success_rate/eps=0.004", "study/success_rate/eps=0.008"]
    rows = read_csv(tmp_path / "iterations.csv")
    assert [(r["eps"], r["iteration"]) for r in rows] == [("0.004", "1"), ("0.004", "2"), ("0.008", "1"), ("0.008", "2")]
    assert json.loads((tmp_path / "summary.json").read_text())["n_images"] == 20


def test_study_config_defaults_match_the_code():
    cfg = compose_cfg("study", ["ckpt_path=unused"])
    assert StudySettings.from_config(cfg.study) == StudySettings()
    assert StudySettings().eps == pytest.approx([0.02 * i for i in range(1, 11)])


def test_train_size_experiment_sweeps_the_training_fraction():
    cfg = compose_cfg("train", ["experiment=pgd_study/train_size"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params["data.train_fraction"] == "0.1,0.25,0.5,1.0"
    assert StudySettings.from_config(cfg.study).eps[-1] == pytest.approx(0.2)


@pytest.mark.parametrize("experiment, datamodule, num_classes", [
    ("synthetic", "SyntheticHistologyDataModule", 9),
    ("nct_crc_he", "NCTCRCHEDataModule", 9),
    ("pathmnist", "MedMNISTDataModule", 9),
    ("pneumoniamnist", "MedMNISTDataModule", 2),
])
def test_study_experiments_compose(experiment, datamodule, num_classes):
    cfg = compose_cfg("train", [f"experiment=pgd_study/{experiment}"])
    assert StudySettings.from_config(cfg.study).eps == StudySettings().eps
    assert cfg.study.apgd is True
    assert cfg.data._target_.rsplit(".", 1)[-1] == datamodule
    assert cfg.model.num_classes == num_classes == len(cfg.model.class_names)


# --------------------------------------------------------------------------- Fig. 3d aggregation


def load_aggregate():
    spec = importlib.util.spec_from_file_location("aggregate", REPO_ROOT / "experiments" / "pgd_study" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_job(sweep, fraction: str, rates: list[float], apgd_rates: list[float] | None = None) -> None:
    """A job directory as `python -m advmed.train -m experiment=pgd_study/train_size` leaves it
    (``apgd_rates``: a study run with APGD beside PGD; without: an older run)."""
    job = sweep / f"data.train_fraction={fraction}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- data.train_fraction={fraction}\n- experiment=pgd_study/train_size\n")
    (job / ".hydra" / "config.yaml").write_text(f"data:\n  train_fraction: {fraction}\n")
    rows = [[eps, eps / 4, 50, 40, round(40 * r), round(40 * r) / 40] for eps, r in zip((0.02, 0.04), rates)]
    columns = ["eps", "alpha", "n_images", "n_eligible", "n_fooled", "success_rate"]
    if apgd_rates is not None:
        columns += ["apgd_n_fooled", "apgd_success_rate"]
        rows = [row + [round(40 * r), round(40 * r) / 40] for row, r in zip(rows, apgd_rates)]
    write_csv(job / "pgd_study" / "eps_sweep.csv", Table(columns, rows))


def test_aggregation_collects_the_jobs_of_a_multirun(tmp_path):
    sweep = tmp_path / "multiruns" / "2024-01-01_00-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    fake_job(sweep, "1.0", [0.5, 0.75])
    fake_job(sweep, "0.25", [0.25, 0.5])
    table, figure = load_aggregate().aggregate(sweep)
    rows = read_csv(table)
    assert list(rows[0]) == ["train_fraction", "eps", "n_eligible", "n_fooled", "success_rate", "job"]
    assert [(r["train_fraction"], float(r["eps"]), float(r["success_rate"])) for r in rows] == [
        ("0.25", 0.02, 0.25), ("0.25", 0.04, 0.5), ("1.0", 0.02, 0.5), ("1.0", 0.04, 0.75)]
    assert table.name == "train_size.csv" and Image.open(figure).format == "PNG"


def test_aggregation_carries_apgd_where_present_and_blanks_older_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    fake_job(sweep, "1.0", [0.5, 0.75], apgd_rates=[0.625, 0.875])
    fake_job(sweep, "0.25", [0.25, 0.5])  # an older run: no APGD columns
    table, figure = load_aggregate().aggregate(sweep)
    rows = read_csv(table)
    assert list(rows[0]) == ["train_fraction", "eps", "n_eligible", "n_fooled", "success_rate",
                             "apgd_n_fooled", "apgd_success_rate", "job"]
    assert [(r["train_fraction"], r["apgd_n_fooled"], r["apgd_success_rate"]) for r in rows] == [
        ("0.25", "", ""), ("0.25", "", ""), ("1.0", "25", "0.625"), ("1.0", "35", "0.875")]
    assert [float(r["success_rate"]) for r in rows] == [0.25, 0.5, 0.5, 0.75]
    assert Image.open(figure).format == "PNG"


def test_aggregation_without_jobs_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Hydra multirun jobs"):
        load_aggregate().aggregate(tmp_path)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("study_cfg, match", [
    ({"eps": []}, r"study\.eps is empty"),
    ({"eps": [0.02, 1.5]}, r"study\.eps\[1\]: eps must be in \[0, 1\]"),
    ({"eps": [-0.01]}, r"study\.eps\[0\]: eps must be in \[0, 1\]"),
    ({"eps": [0.02, 0.02]}, r"repeated"),
    ({"max_iter": 0}, r"study\.max_iter must be an integer >= 1"),
    ({"alpha": 0}, r"study\.alpha must be > 0"),
    ({"confidence_bins": {"low": 0.9, "high": 0.5, "n": 10}}, r"0 <= low < high <= 1"),
    ({"epsilon": [0.1]}, r"unknown study key\(s\) \['epsilon'\]"),
    ({"apgd": "yes"}, r"study\.apgd must be true or false"),
])
def test_bad_settings_are_clear_errors(study_cfg, match):
    with pytest.raises(ValueError, match=match):
        StudySettings.from_config(study_cfg)


def test_entry_point_checks_the_settings_before_loading_anything(tmp_path):
    cfg = compose_cfg("study", [f"ckpt_path={tmp_path / 'missing.ckpt'}", f"paths.output_dir={tmp_path}",
                                "study.max_iter=0"])
    with pytest.raises(ValueError, match=r"study\.max_iter must be an integer >= 1, got 0"):
        study(cfg)


def three_class_module() -> ClassifierModule:
    return ClassifierModule("resnet18", num_classes=3, class_names=["a", "b", "c"]).eval()


def test_checkpoint_with_other_num_classes_is_refused(tmp_path):
    module = three_class_module()
    ckpt = tmp_path / "three.ckpt"
    # The two entries of a Lightning checkpoint that load_classifier reads.
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    cfg = compose_cfg("study", [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path}", *tiny_data_overrides()])
    with pytest.raises(ValueError, match=r"num_classes=3 but the data config has num_classes=9"):
        study(cfg)


def test_run_pgd_study_refuses_a_module_for_other_classes(histology, tmp_path):
    with pytest.raises(ValueError, match=r"num_classes=3 but the data has num_classes=9"):
        run_pgd_study(three_class_module(), histology, {"eps": [0.01]}, tmp_path)


def test_rate_is_nan_when_nothing_is_classified_correctly(tmp_path):
    x, _ = threshold_data()
    y = torch.full((len(x),), 2)  # class 2 is never predicted
    result = run_study(ThresholdModel(), DataLoader(TensorDataset(x, y), batch_size=4),
                       StudySettings(eps=[0.02], max_iter=1, random_start=False), tmp_path)
    assert result.summary["n_eligible"] == 0 and math.isnan(result.tables["eps_sweep"].rows[0][-1])
