"""Chen et al. 2019 through the entry points: `make paper-chen` at tiny sizes (U-Net, xi sweep,
ablations, Table 1), a trained attacker as `attack=deformation` in `advmed.evaluate`, and the
aggregation script's checks."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT
from tests.entrypoints.conftest import compose_config, read_metrics

ORGANS = ["pancreas", "kidneys", "liver", "spleen"]
DATA = "data.image_size=32 data.train_size=40 data.val_size=10 data.test_size=10 data.slices_per_volume=5"


def load_aggregate():
    spec = importlib.util.spec_from_file_location("chen_aggregate", REPO_ROOT / "experiments" / "chen" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper_chen(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper") / "paper_chen"
    unet = "trainer.max_epochs=2 model.depth=2 model.base_width=8 trainer.enable_progress_bar=false"
    attacker = ("trainer.max_epochs=1 model.base_width=4 model.depth=2 model.latent_channels=2 model.critic_width=4 "
                "model.critic_depth=2 trainer.enable_progress_bar=false callbacks.adversarial_examples.num_images=2")
    proc = subprocess.run(
        ["make", "-o", ".venv/.installed-stamp", "paper-chen", f"PAPER_CHEN_DIR={out}", f"PAPER_CHEN_DATA={DATA}",
         f"PAPER_CHEN_UNET_ARGS={unet}", f"PAPER_CHEN_ARGS={attacker}", "PAPER_CHEN_XI=0.5,2.0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_make_paper_chen_writes_table1(paper_chen):
    with (paper_chen / "table1.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["row", *ORGANS, "p"]
    assert [r["row"] for r in rows] == ["clean", "xi=0.5", "xi=2.0", "D xi=2.0", "V xi=2.0"]
    clean = read_metrics(paper_chen / "unet")
    for organ in ORGANS:  # the clean row is the U-Net's own test Dice
        assert float(rows[0][organ]) == pytest.approx(clean[f"test/dice_{organ}"], abs=1e-6)
        assert all(0.0 <= float(r[organ]) <= 1.0 for r in rows)
    assert rows[0]["p"] == "nan" and all(float(r["p"]) >= 0.0 for r in rows[1:])
    table = (paper_chen / "table1.md").read_text()
    borderline = next(line for line in table.splitlines() if line.startswith("| 30 % decrease"))
    assert borderline.split("|")[2].strip() == f"{0.7 * float(rows[0]['pancreas']):.3f}"
    # The D / V rows are the fields of the xi 2.0 attacker applied alone; the trained ablations are listed too.
    fields = read_metrics(paper_chen / "xi_sweep" / "xi_2.0")
    assert float(rows[3]["liver"]) == pytest.approx(fields["test/d_only_dice_liver"], abs=1e-6)
    assert float(rows[4]["p"]) == pytest.approx(fields["test/v_only_p"], abs=1e-6)
    assert "trained with components=d, xi=2.0" in table and "trained with components=v, xi=2.0" in table
    assert "## Checks" in table and (paper_chen / "table1.png").stat().st_size > 0
    job = (paper_chen / "xi_sweep" / "xi_2.0")
    assert (job / "adversarial_examples.png").is_file() and (job / "checkpoints" / "best.ckpt").is_file()
    assert OmegaConf.load((paper_chen / "ablations" / "d_xi_2.0") / ".hydra" / "config.yaml").model.components == "d"


def test_a_trained_attacker_is_an_attack_for_evaluate(paper_chen, tmp_path):
    from advmed.evaluate import evaluate

    attacker = (paper_chen / "xi_sweep" / "xi_2.0") / "checkpoints" / "best.ckpt"
    args = ["experiment=chen/unet", *DATA.split(), f"ckpt_path={paper_chen / 'unet' / 'checkpoints' / 'best.ckpt'}",
            "attack=deformation", f"attack.ckpt_path={attacker}", "callbacks.adversarial_examples.num_images=2"]
    metrics = evaluate(compose_config("evaluate", args, tmp_path / "eval"))
    assert {"test/adv_dice", "test/p", "test/displacement", "test/dice_drop"} <= set(metrics)
    assert 0.0 < metrics["test/p"] < 1.0 and metrics["test/linf"] > 0.0
    assert f"DeformationAttack(ckpt_path={attacker}, sample=True)" in (tmp_path / "eval" / "report.md").read_text()
    # The attacker was trained at 32 px: 64 px data is refused, naming the size to use.
    args[1] = "data.image_size=64"
    with pytest.raises(ValueError, match=r"trained on 32x32 images but got 64x64: evaluate on data\.image_size=32"):
        evaluate(compose_config("evaluate", args, tmp_path / "eval64"))


def test_a_trained_attacker_writes_an_augmented_copy_that_reruns_identically(paper_chen, tmp_path):
    from advmed.augment import augment

    attacker = (paper_chen / "xi_sweep" / "xi_2.0") / "checkpoints" / "best.ckpt"

    def copy(out):
        args = ["experiment=chen/unet", *DATA.split(), f"ckpt_path={paper_chen / 'unet' / 'checkpoints' / 'best.ckpt'}",
                "attack=deformation", f"attack.ckpt_path={attacker}", f"output_dir={out}"]
        return augment(compose_config("augment", args, tmp_path / "log"))

    n, out = copy(tmp_path / "copy")
    assert n == 40 and len(list((out / "images").glob("*.png"))) == 40
    _, again = copy(tmp_path / "again")  # the latents are drawn from the writer's per-batch seeds
    assert all((again / "images" / p.name).read_bytes() == p.read_bytes() for p in (out / "images").glob("*.png"))


def test_the_attacker_experiment_needs_the_unet_checkpoint(tmp_path):
    from advmed.train import train

    with pytest.raises(ValueError, match=r"required config value\(s\) not set: model\.unet_ckpt"):
        train(compose_config("train", ["experiment=chen/deformation"], tmp_path))
    cfg = compose_config("train", ["experiment=chen/deformation", "model.unet_ckpt=x.ckpt", "model.xi=1.5"], tmp_path)
    assert (cfg.model.xi, cfg.model.lambda_D, cfg.model.lambda_V) == (1.5, 0.1, 0.01)
    assert cfg.model.generator_optimizer == {"_target_": "torch.optim.RMSprop", "lr": 1e-4, "alpha": 0.9, "eps": 1e-10}
    assert cfg.attack == {} and cfg.model.num_classes == 5 and cfg.model.class_names[1:] == ["liver", "spleen", "kidneys", "pancreas"]


def _fake_run(root, name, xi, components, dice, p, clean=0.9, d_only=0.85, v_only=0.7):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save({"model": {"_target_": "advmed.models.deformation.DeformationAttackerModule", "xi": xi,
                              "components": components}}, run / ".hydra" / "config.yaml")
    metrics = {"test/p": p, "test/d_only_p": p / 3, "test/v_only_p": p / 2,
               **{f"test/{prefix}dice_{o}": value for o in ORGANS
                  for prefix, value in (("", clean), ("adv_", dice), ("d_only_", d_only), ("v_only_", v_only))}}
    (run / "metrics.json").write_text(json.dumps({"metrics": metrics}))


def test_aggregate_states_the_papers_findings_and_refuses_mixed_unets(tmp_path):
    aggregate = load_aggregate()
    for xi, dice, p in ((0.5, 0.8, 0.01), (1.0, 0.81, 0.02), (2.0, 0.5, 0.03)):  # 0.8 -> 0.81: inside the tolerance
        _fake_run(tmp_path, f"xi{xi}", xi, "dv", dice, p)
    _fake_run(tmp_path, "d", 2.0, "d", 0.7, 0.01)
    _fake_run(tmp_path, "v", 2.0, "v", 0.4, 0.01)  # V alone stronger than D+V: reported as not reproduced
    table = aggregate.aggregate(tmp_path)
    assert [r[0] for r in table.rows] == ["clean", "xi=0.5", "xi=1.0", "xi=2.0", "D xi=2.0", "V xi=2.0"]
    assert table.rows[4][1:] == [0.85] * 4 + [0.01] and table.rows[5][5] == pytest.approx(0.015)
    checks = (tmp_path / "table1.md").read_text()
    assert "mean Dice falls as xi grows (each step up by at most 0.02): True" in checks
    assert "p grows with xi (each step down by at most 0.002): True" in checks
    assert "more than D alone: True (0.500 vs 0.850)" in checks and "more than V alone: True (0.500 vs 0.700)" in checks
    assert "trained with components=d at xi=2: True" in checks and "components=v at xi=2: False" in checks
    with pytest.raises(ValueError, match=r"no D\+V attacker trained at xi=1.5"):
        aggregate.aggregate(tmp_path, fields_xi=1.5)
    assert not aggregate.is_monotone([0.8, 0.85, 0.5], decreasing=True, tolerance=0.02)
    _fake_run(tmp_path, "other", 3.0, "dv", 0.1, 0.05, clean=0.7)
    with pytest.raises(ValueError, match="clean Dice differs between .* attacked different U-Nets or test data"):
        aggregate.aggregate(tmp_path)
    with pytest.raises(FileNotFoundError, match="no finished deformation attacker runs"):
        aggregate.aggregate(tmp_path / "empty")


@pytest.mark.slow
def test_full_make_paper_chen_reproduces_the_papers_trends(tmp_path):
    """The acceptance run (about 10 minutes on 2 CPU cores): across xi 0.5..3.0 mean Dice falls and p
    grows, each monotone within the script's tolerance, and D+V at xi 2.0 beats D alone and V alone."""
    out = tmp_path / "paper_chen"
    proc = subprocess.run(["make", "-o", ".venv/.installed-stamp", "paper-chen", f"PAPER_CHEN_DIR={out}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = [line for line in (out / "table1.md").read_text().splitlines()
              if line.startswith("- ") and "not the paper's rows" not in line and "asks for" not in line]
    assert len(checks) == 4 and all(": True (" in line for line in checks), checks
