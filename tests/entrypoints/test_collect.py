"""`python -m advmed.collect <multirun dir>`: one table of a sweep's jobs, failed and killed ones marked."""

import csv
import re
import tempfile
from pathlib import Path

import pytest
import yaml

from advmed.collect import collect, main
from advmed.studies.robustness_report import write_report
from advmed.studies.sweep_table import last_error_line
from advmed.utils.files import write_json
from advmed.utils.job_status import job_status
from advmed.utils.resolvers import job_dirname, register_resolvers
from tests.entrypoints.conftest import TINY, run_module

CONSTANT = ["experiment=demo", "debug=tiny"]
OOM = "slurmstepd: error: Detected 1 oom_kill event in StepId=4242.batch. Some of your processes may have been killed."


def _job(sweep: Path, overrides: list[str], job_id: str) -> Path:
    """A job directory as Hydra starts it: .hydra/overrides.yaml and hydra.yaml (with the job id)."""
    job_dir = sweep / ",".join(o for o in overrides if o not in CONSTANT)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"id": job_id, "num": 0}}}))
    return job_dir


@pytest.fixture
def sweep(tmp_path) -> Path:
    """eps 0.02, 0.05, 1.5 x arch resnet18, resnet34 in the layout advmed.train writes: four completed
    jobs, eps=1.5 failed on resnet18 and killed (out of memory, submitit log only) on resnet34."""
    sweep = tmp_path / "multiruns" / "2026-01-01_00-00-00"
    accuracy = {"resnet18": 0.9, "resnet34": 0.8}
    for i, (arch, eps) in enumerate((a, e) for a in accuracy for e in ("0.02", "0.05", "1.5")):
        overrides = [*CONSTANT, f"model.arch={arch}", f"attack.eps={eps}"]
        job_dir = _job(sweep, overrides, job_id=str(4240 + i))
        if eps == "1.5" and arch == "resnet18":
            with pytest.raises(ValueError), job_status(job_dir, overrides):
                raise ValueError("Error in call to target 'advmed.attacks.fgsm.FGSM':\n"
                                 "ValueError('eps must be in [0, 1], got 1.5 (did you mean 1.5/255?)')")
        elif eps == "1.5":
            write_json(job_dir / "status.json", {"status": "running", "overrides": overrides, "hydra_job_id": "4242"})
            log = sweep / ".submitit" / "4242" / "4242_0_log.err"
            log.parent.mkdir(parents=True)
            log.write_text("Epoch 0:  50%|#####     | 10/20\n" + OOM + "\n")
        else:
            metrics = {"test/acc": accuracy[arch], "test/adv_acc": accuracy[arch] - float(eps), "val/acc": 0.7}
            with job_status(job_dir, overrides) as status:
                write_report(job_dir, metrics, {"_target_": "advmed.attacks.FGSM", "eps": float(eps)}, "best.ckpt",
                             "SyntheticHistologyDataModule", image_file=None)
                status.result = metrics["test/acc"]
    return sweep


def test_collect_lists_every_job_with_its_status_metrics_and_error(sweep):
    result = collect(sweep)
    rows = list(csv.DictReader(result.csv.open()))
    assert [(r["model.arch"], r["attack.eps"], r["status"]) for r in rows] == [
        ("resnet18", "0.02", "completed"), ("resnet18", "0.05", "completed"), ("resnet18", "1.5", "failed"),
        ("resnet34", "0.02", "completed"), ("resnet34", "0.05", "completed"), ("resnet34", "1.5", "running-or-killed"),
    ]
    assert list(rows[0])[:3] == ["job", "model.arch", "attack.eps"]
    assert list(rows[0])[-3:] == ["test/acc", "test/adv_acc", "val/acc"]  # test/* first
    assert float(rows[1]["test/adv_acc"]) == pytest.approx(0.85)
    assert rows[2]["test/acc"] == "" and "got 1.5" in rows[2]["error"] and rows[5]["error"] == OOM
    assert rows[0]["experiment"] == "demo"  # the CSV keeps the constant overrides too

    md = result.markdown.read_text()
    assert "- same in every job: `experiment=demo`, `debug=tiny`" in md
    assert "| job | model.arch | attack.eps | status | test/acc | test/adv_acc | val/acc |" in md
    assert "- jobs: 6 (4 completed, 1 failed, 1 running-or-killed)" in md
    failed_section = md.split("## Failed jobs")[1].split("##")[0]
    assert "`model.arch=resnet18,attack.eps=1.5`: ValueError: Error in call to target" in failed_section
    assert "eps must be in [0, 1], got 1.5" in failed_section
    assert f"`model.arch=resnet34,attack.eps=1.5`: last error in its submitit log: {OOM}" in md


def test_plot_of_a_metric_against_an_override_has_one_point_per_finished_job(sweep, tmp_path):
    result = collect(sweep, metric="test/adv_acc", x_key="attack.eps", output_dir=tmp_path / "out")
    assert result.plot == tmp_path / "out" / "test_adv_acc_vs_attack.eps.png"
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(result.series) == ["model.arch=resnet18", "model.arch=resnet34"]
    for arch, acc in (("resnet18", 0.9), ("resnet34", 0.8)):
        xs, ys = result.series[f"model.arch={arch}"]
        assert xs == [0.02, 0.05]  # the failed and killed eps=1.5 jobs have no point
        assert ys == pytest.approx([acc - 0.02, acc - 0.05])
    assert (tmp_path / "out" / "collect.csv").is_file() and not (sweep / "collect.csv").exists()


def test_study_and_older_jobs_without_a_status_record_are_read(tmp_path):
    study_job = _job(tmp_path, ["ckpt_path=a.ckpt", "study.max_iter=5"], job_id="0")
    write_json(study_job / "summary.json", {"success_rate": {"0.02": 0.25, "0.1": 0.75}, "n_images": 8})
    old_job = _job(tmp_path, ["ckpt_path=a.ckpt", "study.max_iter=10"], job_id="1")
    write_json(old_job / "summary.json", {"success_rate": {"0.02": 0.5}})
    _job(tmp_path, ["ckpt_path=a.ckpt", "study.max_iter=20"], job_id="2")  # died before it wrote anything
    jobs = {job.overrides["study.max_iter"]: job for job in collect(tmp_path).table.jobs}
    assert jobs["5"].metrics == {"study/success_rate/eps=0.02": 0.25, "study/success_rate/eps=0.1": 0.75}
    assert [jobs[k].status for k in ("5", "10", "20")] == ["completed", "completed", "running-or-killed"]
    assert jobs["20"].error is None and jobs["20"].metrics == {}  # no .submitit folder: no log to explain it


def test_last_error_line_of_a_log():
    traceback = ("Traceback (most recent call last):\n  File \"train.py\", line 3, in main\n    fit()\n"
                 "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n    full_key: x\n")
    assert last_error_line(_log(traceback)) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert last_error_line(_log(traceback + OOM + "\n")) == OOM  # what ended the job came later
    assert last_error_line(_log("Epoch 1: loss=0.3\nall good\n")) is None


def _log(text: str) -> Path:
    path = Path(tempfile.mkdtemp()) / "1_0_log.err"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing"], "missing' does not exist: give a multirun directory"),
        (["{tmp}/file.txt"], "file.txt' is not a directory"),
        (["{tmp}/empty"], "no jobs under '.*empty': looked for job directories holding .hydra/overrides.yaml"),
        (["{sweep}", "--metric", "test/adv_acc"], "--metric and --x go together"),
        (["{sweep}", "--metric", "test/nope", "--x", "attack.eps"],
         "unknown metric 'test/nope': the jobs report test/acc, test/adv_acc, val/acc"),
        (["{sweep}", "--metric", "test/acc", "--x", "attack.steps"],
         "unknown override 'attack.steps': the jobs override model.arch, attack.eps, experiment, debug"),
    ],
)
def test_cli_errors_name_the_value_and_the_fix(sweep, tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path, sweep=sweep) for a in args])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (sweep / "collect.csv").exists()  # a typo writes nothing


def test_cli_prints_the_markdown_table(sweep, capsys):
    main([str(sweep)])
    out = capsys.readouterr().out
    assert "| job | model.arch | attack.eps | status |" in out and "## Failed jobs" in out
    assert f"wrote {sweep / 'collect.csv'}, {sweep / 'collect.md'}" in out


def test_job_dirname_keeps_short_names_and_cuts_long_ones_with_a_hash(tmp_path):
    assert job_dirname("attack.eps=0.02") == "attack.eps=0.02"
    long_a = "attack.eps=0.02,data.root=/" + "a" * 300
    long_b = "attack.eps=0.05,data.root=/" + "a" * 300
    name_a, name_b = job_dirname(long_a), job_dirname(long_b)
    assert len(name_a.encode()) <= 150 and "/" not in name_a
    assert name_a != name_b and name_a == job_dirname(long_a)  # distinct and stable
    assert name_a.startswith("attack.eps=0.02,data.root=_aaa")
    assert len(job_dirname("é" * 200).encode()) <= 150  # never half a character
    (tmp_path / name_a).mkdir()  # a valid file name
    with pytest.raises(ValueError, match="max_bytes must exceed 11, got 5"):
        job_dirname(long_a, 5)


def test_sweep_subdir_uses_the_resolver(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from tests.conftest import CONFIG_DIR

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        short = compose("train", overrides=["attack.eps=0.02"], return_hydra_config=True)
        long = compose("train", overrides=["attack.eps=0.02", "+note=" + "n" * 300], return_hydra_config=True)
    assert OmegaConf.select(short, "hydra.sweep.subdir") == "attack.eps=0.02"
    subdir = OmegaConf.select(long, "hydra.sweep.subdir")
    assert subdir == job_dirname(long.hydra.job.override_dirname) and len(subdir.encode()) <= 150


@pytest.mark.parametrize("launcher", [
    pytest.param([], id="basic"),
    pytest.param(["hydra/launcher=local"], id="submitit-local", marks=pytest.mark.slow),  # ~60 s: a process per job
])
def test_a_multirun_with_a_failing_job_finishes_the_other_and_collect_marks_it(tmp_path, capsys, launcher):
    """Every job of the sweep runs, then the sweep exits 1 (Hydra raises the first failure once the batch
    is done); the long override sends the job directory names through the hash, and collect finds the
    jobs from their overrides."""
    if launcher:
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    note = "+run_note=" + "n" * 200
    args = ["-m", *launcher, "experiment=demo", *TINY, "trainer.max_epochs=1", note, "attack.eps=1.5,0.02"]  # 1.5 fails
    with pytest.raises(AssertionError, match="eps must be in"):
        run_module("advmed.train", args, cwd=tmp_path)
    sweep = next(tmp_path.glob("outputs/train/multiruns/*"))
    done = list(sweep.glob("*/metrics.json"))
    assert len(done) == 1 and len(done[0].parent.name.encode()) <= 150

    main([str(sweep)])
    rows = {r["attack.eps"]: r for r in csv.DictReader((sweep / "collect.csv").open())}
    assert rows["0.02"]["status"] == "completed" and 0 <= float(rows["0.02"]["test/acc"]) <= 1
    assert rows["1.5"]["status"] == "failed" and "eps must be in [0, 1]" in rows["1.5"]["error"]
    assert "got 1.5" in rows["1.5"]["error"]
    assert "got 1.5" in capsys.readouterr().out.split("## Failed jobs")[1]


@pytest.fixture
def seed_sweep(tmp_path) -> Path:
    """seed 0, 1, 2 x attack.eps 0.02, 0.05 with known accuracies; the job seed=2, eps=0.05 failed."""
    sweep = tmp_path / "multiruns" / "seeds"
    adv = {("0", "0.02"): 0.50, ("1", "0.02"): 0.60, ("2", "0.02"): 0.70, ("0", "0.05"): 0.20, ("1", "0.05"): 0.30}
    for seed in ("0", "1", "2"):
        for eps in ("0.02", "0.05"):
            overrides = [*CONSTANT, f"seed={seed}", f"attack.eps={eps}"]
            job_dir = _job(sweep, overrides, job_id=f"{seed}{eps}")
            if (seed, eps) not in adv:
                with pytest.raises(RuntimeError), job_status(job_dir, overrides):
                    raise RuntimeError("NaN loss")
                continue
            metrics = {"test/acc": 0.9, "test/adv_acc": adv[seed, eps]}
            with job_status(job_dir, overrides):
                write_report(job_dir, metrics, {"_target_": "advmed.attacks.FGSM", "eps": float(eps)}, "best.ckpt",
                             "SyntheticHistologyDataModule", image_file=None)
    return sweep


def test_a_seed_sweep_gets_mean_and_sd_over_the_seeds_per_setting(seed_sweep, tmp_path):
    result = collect(seed_sweep, output_dir=tmp_path / "out")
    csv_path, md_path = result.spread_files
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["attack.eps"], r["n"], r["seed"]) for r in rows] == [("0.02", "3", "0 1 2"), ("0.05", "2", "0 1")]
    assert float(rows[0]["test/adv_acc_mean"]) == pytest.approx(0.6)
    assert float(rows[0]["test/adv_acc_sd"]) == pytest.approx(0.1)  # sample sd of 0.5, 0.6, 0.7
    assert float(rows[1]["test/adv_acc_sd"]) == pytest.approx((0.005) ** 0.5)  # 0.2, 0.3: the failed seed left out
    assert float(rows[1]["test/acc_sd"]) == 0.0
    md = md_path.read_text()
    assert "| attack.eps | n | test/acc | test/adv_acc |" in md
    assert "| 0.02 | 3 | 0.9000 ± 0.0000 | 0.6000 ± 0.1000 |" in md


def test_one_seed_per_setting_says_so_and_a_key_not_swept_is_refused(seed_sweep, sweep, tmp_path):
    from advmed.studies.seed_spread import Spread

    assert Spread.of([0.8]).text() == "0.8000 (1 seed)" and Spread.of([]).text() == ""
    assert collect(sweep, output_dir=tmp_path / "a").spread is None  # no seed swept: no spread table
    with pytest.raises(ValueError, match=r"do not sweep 'seed' \(they sweep model.arch, attack.eps\).*seed=0,1,2"):
        collect(sweep, output_dir=tmp_path / "b", over="seed")
    assert not (tmp_path / "b").exists()  # refused before anything was written
    by_eps = collect(seed_sweep, output_dir=tmp_path / "c", over="attack.eps").spread
    assert [values for values, _ in by_eps.groups] == [("0",), ("1",), ("2",)]
