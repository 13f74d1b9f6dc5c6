"""experiments/lockshin/pipeline.py (`make paper-lockshin`): the whole Lockshin et al. 2022 pipeline at
the smoke scale writes Table 1 (with its AutoAttack column) and its provenance, a rerun skips every
finished stage, a kill during the adversarial copy is completed by rerunning the same command, a stage
pointed at an incomplete dataset says which stage to rerun, the CPU and full scales run AutoAttack at
its standard settings, and the folder of a run from before the AutoAttack stages still aggregates."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from advmed.data.copy_layouts import TMP_SUFFIX
from advmed.data.writers import read_manifest
from advmed.utils.stages import StageInputError
from tests.conftest import REPO_ROOT
from tests.entrypoints.conftest import compose_config

PIPELINE = REPO_ROOT / "experiments" / "lockshin" / "pipeline.py"
AGGREGATE = REPO_ROOT / "experiments" / "lockshin" / "aggregate.py"
ROWS = ("real", "synthetic", "adversarial")
STAGES = ["classifier_real", "stylegan2", "srgan", "synthetic", "advgan", "adversarial", "classifier_synthetic",
          "classifier_adversarial"] + [f"evaluate_{row}_{attack}" for row in ROWS
                                       for attack in ("advgan", "fgsm", "autoattack")] + ["table"]
COLUMNS = ["train_set", "clean_acc", "advgan_acc", "fgsm_acc", "autoattack_acc"]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pipeline_module():
    return _load(PIPELINE, "lockshin_pipeline")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The whole pipeline at the smoke scale, in-process (no interpreter start-up per stage)."""
    out = tmp_path_factory.mktemp("paper_lockshin") / "out"
    _pipeline_module().main(["--scale", "smoke", "--out", str(out), "--in-process"])
    return out


def test_the_smoke_pipeline_writes_table1_with_every_stage_recorded(smoke_run):
    out = smoke_run
    with (out / "table1.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    assert [r["train_set"] for r in rows] == ["real", "real+synthetic", "real+synthetic+adversarial"]
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in COLUMNS[1:])
    evaluation = json.loads((out / "evaluate_real_fgsm" / "metrics.json").read_text())["metrics"]
    assert float(rows[0]["fgsm_acc"]) == pytest.approx(evaluation["test/adv_acc"])
    for row, short in zip(rows, ROWS):
        autoattack = json.loads((out / f"evaluate_{short}_autoattack" / "metrics.json").read_text())
        assert float(row["autoattack_acc"]) == pytest.approx(autoattack["metrics"]["test/adv_acc"])
        # AutoAttack tested the same checkpoint on the same split as the other two evaluations.
        assert autoattack["metrics"]["test/acc"] == pytest.approx(float(row["clean_acc"]))
        assert float(row["autoattack_acc"]) <= autoattack["metrics"]["test/acc_after_apgd_ce"] <= float(row["clean_acc"])
        assert autoattack["attack"]["eps"] == 0.1 and autoattack["attack"]["version"] == "standard"
    markdown = (out / "table1.md").read_text()
    for text in ("paper AdvGAN", "AutoAttack eps 0.1", "AutoAttack (standard, Linf, eps 0.1; 2 iterations, 1 restart, "
                 "10 Square queries", "## AutoAttack, robust accuracy after each attack", "after APGD-CE", "after SQUARE",
                 "## Checks", "StyleGAN2: FID", "SRGAN x2: PSNR", "real: 36 tiles", "## Provenance"):
        assert text in markdown, text
    assert (out / "table1.png").stat().st_size > 0
    # 36 real + 180 synthetic tiles, and an AdvGAN copy of each: the third classifier's training set.
    assert len(read_manifest(out / "synthetic")) == 180 and len(read_manifest(out / "adversarial")) == 216
    records = {name: json.loads((out / "stages" / f"{name}.json").read_text()) for name in STAGES}
    assert all(r["complete"] for r in records.values())
    advgan_hash = records["advgan"]["outputs"]["checkpoint"]["sha256"]
    assert records["adversarial"]["inputs"]["advgan"]["sha256"] == advgan_hash
    assert records["evaluate_adversarial_advgan"]["inputs"]["advgan"]["sha256"] == advgan_hash
    assert records["classifier_adversarial"]["inputs"]["adversarial"]["num_items"] == 216
    assert "model.fid.resize=true" in records["stylegan2"]["command"]
    # The AutoAttack stages: the FGSM stages' inputs (the classifier alone) and the smoke scale's short settings.
    for short in ROWS:
        fgsm, autoattack = records[f"evaluate_{short}_fgsm"], records[f"evaluate_{short}_autoattack"]
        assert autoattack["inputs"] == fgsm["inputs"]
        assert autoattack["inputs"]["classifier"] == records[f"classifier_{short}"]["outputs"]["checkpoint"]
        assert ("attack=autoattack attack.eps=0.1 attack.steps=2 attack.n_queries=10" in autoattack["command"])
        assert records["table"]["inputs"][f"evaluate_{short}_autoattack"] == autoattack["outputs"]["metrics"]


@pytest.mark.parametrize("scale", ["cpu", "full"])
def test_the_cpu_and_full_scales_run_autoattack_at_its_standard_settings(scale, tmp_path):
    stages = {s.name: s for s in _pipeline_module().build_stages(_pipeline_module().load_scale(scale), tmp_path)}
    argv = stages["evaluate_real_autoattack"].argv
    attack = [a for a in argv if a.startswith("attack")]
    assert attack == ["attack=autoattack", "attack.eps=0.1"]
    cfg = compose_config("evaluate", attack, tmp_path / "run")
    assert (cfg.attack.version, cfg.attack.norm, cfg.attack.steps, cfg.attack.n_queries) == ("standard", "Linf", 100, 5000)
    # The same data and evaluation settings as the FGSM stage beside it: only the attack and the run folder differ.
    fgsm = stages["evaluate_real_fgsm"].argv
    assert argv[-1] == f"hydra.run.dir={tmp_path / 'evaluate_real_autoattack'}"
    assert [a for a in argv[:-1] if not a.startswith("attack")] == [a for a in fgsm[:-1] if not a.startswith("attack")]


@pytest.mark.parametrize("missing", [ROWS, ("adversarial",)], ids=["an older run", "one row not run"])
def test_a_folder_without_the_autoattack_stages_still_aggregates(smoke_run, tmp_path, capsys, missing):
    """The folder of a run made before the pipeline had the AutoAttack stages: Table 1 keeps the column with
    empty cells where AutoAttack did not run, says so, and the other columns are those of the full run."""
    out = tmp_path / "old"
    skipped = {f"evaluate_{short}_autoattack" for short in missing}
    shutil.copytree(smoke_run, out, ignore=lambda folder, names: [n for n in names if n in skipped or n.endswith(".ckpt")
                                                                  or n.removesuffix(".json") in skipped])
    _load(AGGREGATE, "lockshin_aggregate").aggregate(out, 0.1)
    message = capsys.readouterr().err
    assert f"--stages {','.join(sorted(skipped, key=[f'evaluate_{r}_autoattack' for r in ROWS].index))},table" in message
    with (out / "table1.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (smoke_run / "table1.csv").open() as f:
        full = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    for row, reference, short in zip(rows, full, ROWS):
        assert [row[k] for k in COLUMNS[:4]] == [reference[k] for k in COLUMNS[:4]]
        assert row["autoattack_acc"] == ("" if short in missing else reference["autoattack_acc"])
    markdown = (out / "table1.md").read_text()
    assert markdown.count("| not run |") == len(missing)
    assert ("## AutoAttack, robust accuracy" in markdown) == (len(missing) < len(ROWS))
    assert Image.open(out / "table1.png").format == "PNG"


def test_rerunning_the_same_command_skips_every_finished_stage(smoke_run, capsys):
    _pipeline_module().main(["--scale", "smoke", "--out", str(smoke_run), "--in-process"])
    with (smoke_run / "stages.csv").open() as f:
        assert {row["status"] for row in csv.DictReader(f)} == {"skipped"}


def test_rerunning_a_run_from_before_the_autoattack_stages_runs_only_those_and_the_table(smoke_run):
    """The stages of an older run keep their commands: the same command adds the AutoAttack column alone."""
    table = smoke_run / "stages" / "table.json"
    record = json.loads(table.read_text())
    for short in ROWS:  # the folder as the pipeline left it before these stages existed
        shutil.rmtree(smoke_run / f"evaluate_{short}_autoattack")
        (smoke_run / "stages" / f"evaluate_{short}_autoattack.json").unlink()
        del record["inputs"][f"evaluate_{short}_autoattack"]
    table.write_text(json.dumps(record))
    _pipeline_module().main(["--scale", "smoke", "--out", str(smoke_run), "--in-process"])
    with (smoke_run / "stages.csv").open() as f:
        ran = {row["stage"] for row in csv.DictReader(f) if row["status"] == "ran"}
    assert ran == {f"evaluate_{short}_autoattack" for short in ROWS} | {"table"}
    with (smoke_run / "table1.csv").open() as f:
        assert all(row["autoattack_acc"] != "" for row in csv.DictReader(f))


@pytest.mark.cluster  # a SIGKILLed subprocess pipeline and its rerun: with the other kill-and-resume tests
def test_a_kill_during_the_adversarial_copy_is_finished_by_the_same_command(smoke_run, tmp_path):
    """SIGKILL the pipeline (and its stage) while the adversarial copy is half written, rerun the same
    command: the copy is complete, with no duplicate or truncated file, byte-identical to an uninterrupted one."""
    out = smoke_run
    # One tile per batch, so that the copy takes long enough to be killed half-way; the uninterrupted
    # reference is written the same way.
    one_per_batch = ["--stages", "adversarial", "--stage-args", "adversarial=batch_size=1"]
    _pipeline_module().main(["--scale", "smoke", "--out", str(out), "--in-process", "--force", *one_per_batch])
    reference = tmp_path / "reference"
    shutil.copytree(out / "adversarial", reference)
    shutil.rmtree(out / "adversarial")
    (out / "stages" / "adversarial.json").unlink()
    command = [sys.executable, str(PIPELINE), "--scale", "smoke", "--out", str(out), *one_per_batch]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((out / "adversarial").glob("*/*.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list((out / "adversarial").glob("*/*.png")))
    assert 0 < written < 216, written  # killed half-way
    assert not (out / "adversarial" / "manifest.csv").exists()

    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    rows = read_manifest(out / "adversarial")
    on_disk = sorted(str(p.relative_to(out / "adversarial")) for p in (out / "adversarial").glob("*/*.png"))
    assert sorted(row["image"] for row in rows) == on_disk and len(on_disk) == 216  # each item once
    assert not list((out / "adversarial").rglob(f"*{TMP_SUFFIX}"))
    for name in on_disk:
        Image.open(out / "adversarial" / name).verify()  # no truncated file
        assert (out / "adversarial" / name).read_bytes() == (reference / name).read_bytes()
    record = json.loads((out / "stages" / "adversarial.json").read_text())
    assert record["complete"] and record["outputs"]["dataset"]["num_items"] == 216


def test_a_stage_pointed_at_a_dataset_with_missing_files_names_the_stage_to_rerun(smoke_run):
    victim = next((smoke_run / "synthetic").glob("*/*.png"))
    saved = victim.read_bytes()
    victim.unlink()
    try:
        with pytest.raises(StageInputError, match=rf"stage classifier_synthetic: its input synthetic .* is incomplete: .*"
                                                  rf"missing or empty \(first: \['{victim.parent.name}/{victim.name}'\]\): "
                                                  r"run stage synthetic first \(python experiments/lockshin/pipeline\.py "
                                                  r"--stages synthetic"):
            _pipeline_module().main(["--scale", "smoke", "--out", str(smoke_run), "--in-process",
                                     "--stages", "classifier_synthetic"])
    finally:
        victim.write_bytes(saved)


@pytest.mark.parametrize(("real_clean", "adversarial_clean", "text", "holds"), [
    (0.81, 0.88, "its clean accuracy is 7.0 points above the real one's", True),
    (0.83, 0.82, "its clean accuracy is 1.0 points below the real one's", True),
    (0.85, 0.80, "its clean accuracy is 5.0 points below the real one's", False),
])
def test_the_clean_accuracy_check_says_above_or_below(real_clean, adversarial_clean, text, holds):
    aggregate = _load(AGGREGATE, "lockshin_aggregate")
    rows = [["real", real_clean, 0.1, 0.0, 0.0], ["real+synthetic", 0.8, 0.2, 0.0, 0.0],
            ["real+synthetic+adversarial", adversarial_clean, 0.8, 0.0, 0.0]]
    (_, gain_ok), (clean_text, clean_ok) = aggregate.checks(aggregate.Table(COLUMNS, rows))
    assert gain_ok and clean_text.startswith(text) and clean_ok is holds
