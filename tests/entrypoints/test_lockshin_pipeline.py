"""experiments/lockshin/pipeline.py (`make paper-lockshin`): the whole Lockshin et al. 2022 pipeline at
the smoke scale writes Table 1 with its provenance, a rerun skips every finished stage, a kill during
the adversarial copy is completed by rerunning the same command, and a stage pointed at an
incomplete dataset says which stage to rerun."""

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

PIPELINE = REPO_ROOT / "experiments" / "lockshin" / "pipeline.py"
STAGES = ["classifier_real", "stylegan2", "srgan", "synthetic", "advgan", "adversarial", "classifier_synthetic",
          "classifier_adversarial"] + [f"evaluate_{row}_{attack}" for row in ("real", "synthetic", "adversarial")
                                       for attack in ("advgan", "fgsm")] + ["table"]


def _pipeline_module():
    spec = importlib.util.spec_from_file_location("lockshin_pipeline", PIPELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert list(rows[0]) == ["train_set", "clean_acc", "advgan_acc", "fgsm_acc"]
    assert [r["train_set"] for r in rows] == ["real", "real+synthetic", "real+synthetic+adversarial"]
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("clean_acc", "advgan_acc", "fgsm_acc"))
    evaluation = json.loads((out / "evaluate_real_fgsm" / "metrics.json").read_text())["metrics"]
    assert float(rows[0]["fgsm_acc"]) == pytest.approx(evaluation["test/adv_acc"])
    markdown = (out / "table1.md").read_text()
    for text in ("paper AdvGAN", "## Checks", "StyleGAN2: FID", "SRGAN x2: PSNR", "real: 36 tiles", "## Provenance"):
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


def test_rerunning_the_same_command_skips_every_finished_stage(smoke_run, capsys):
    _pipeline_module().main(["--scale", "smoke", "--out", str(smoke_run), "--in-process"])
    with (smoke_run / "stages.csv").open() as f:
        assert {row["status"] for row in csv.DictReader(f)} == {"skipped"}


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
