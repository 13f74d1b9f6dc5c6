"""Every command of the guides' shell blocks is run by a test at smoke size, or is marked as full scale only.

The mark, read by tests/docs/doc_commands.py, is a comment line in the block::

    # full scale only: <why>

It marks the commands below it, to the next blank line or the end of the block (at the top of a block without
blank lines: the whole block), as needing more than a CPU and the procedural data: real data, GPUs, a SLURM
cluster, an account or the network, hours. The reader sees it and its reason; the tests run none of those
commands (tests/docs/test_doc_commands.py still composes their overrides).

Every other command of a shell block (inline spans of prose may show fragments and are not run) is one of:

- a job of a Hydra entry point, ``python -m advmed.train|evaluate|study|augment|generate ...``: run here,
  in-process (``test_the_guides_jobs_run_at_smoke_size``), with the command's overrides then ``debug=tiny``
  (conf/debug/tiny.yaml), whose values also replace those the command sets (image size, epochs: what makes a
  run full scale); a sweep at its first value, a sweep of a config group at each value. Hydra's own settings
  (``hydra.run.dir``, ``hydra/launcher=...``) are left out: the job writes under the test's folder, and the
  launchers have their own tests (test_multirun.py, tests/slurm/). A checkpoint of an earlier step
  (``ckpt_path=...``, ``<run dir>/checkpoints/best.ckpt``) is a tiny one trained on the command's data once
  per test session (CHECKPOINTS); the PGD study runs at two eps (STUDY_CAPS), and SMOKE_EXCEPTIONS says
  where a command needs more than debug=tiny's 32 px. Jobs whose config is the same at smoke size run once
  (the one equal to the entry-point tests' ``trained_run`` is that run). Each job must leave its record: a
  clean test accuracy or Dice in [0, 1] in metrics.json (and a training its checkpoint), the card's clean
  figure, the study's success rates, the written copy's manifest. The few that take minutes even so are
  marked ``slow`` (SLOW: ``make test-full`` runs them);
- run at smoke size by another test of the suite: RUN_ELSEWHERE names it (a paper's ``make`` target, a step
  of its recipe, a script), and ``test_the_tests_named_for_commands_exist`` checks that it does;
- setting up the checkout the tests run in: TOOLING.

``test_commands_that_need_full_scale_are_marked`` fails on an unmarked command that plainly needs full
scale (NEEDS_FULL_SCALE: an absolute path, a real dataset, a GPU or DDP trainer, SLURM, a download, ...).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from advmed.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR, REPO_ROOT
from tests.docs.doc_commands import Command, all_commands, override_sets
from tests.entrypoints.conftest import TINY, compose_config, trained_run  # noqa: F401 -- trained_run: a fixture here too
from tests.entrypoints.test_card import UNET
from tests.entrypoints.test_debug_tiny import SHARED_RUN
from tests.shared_artifacts import build_once, shared_root

register_resolvers()

ENTRY_POINTS = ("advmed.train", "advmed.evaluate", "advmed.study", "advmed.augment", "advmed.generate")
# A loop's own lines (`for m in ...; do`, `done`) are shell syntax, not commands.
SHELL_SYNTAX = {"for", "do", "done", "while", "if", "then", "else", "fi", "case", "esac", "}"}
COMMANDS = [c for c in all_commands() if not c.inline and c.argv[0] not in SHELL_SYNTAX]


def words(command: Command) -> str:
    """The command on one line, its Python called ``python`` (``.venv/bin/python`` alike)."""
    return " ".join("python" if re.fullmatch(r"(\S*/)?python3?", w) else w for w in command.argv)


def _real_data_experiments() -> str:
    names = [p.relative_to(CONFIG_DIR / "experiment").with_suffix("").as_posix()
             for p in (CONFIG_DIR / "experiment").rglob("*.yaml")
             if re.search(r"override /data: (?!synthetic_)\w", p.read_text())]
    return "|".join(map(re.escape, names))


# What plainly needs more than a CPU and the procedural data: (pattern of the command's words, what it needs).
NEEDS_FULL_SCALE = [
    (r"(?:^|[\s=])/\w", "an absolute path: real data, a cluster's scratch or its weights"),
    (r"\bdata=(?!synthetic_)\w", "a real dataset (data=...)"),
    (rf"\bexperiment=(?:{_real_data_experiments()})\b", "a real dataset (its experiment's data)"),
    (r"\btrainer=(?:gpu|ddp)\b", "GPUs (trainer=gpu / trainer=ddp)"),
    (r"\bhydra/launcher=slurm\b", "a SLURM cluster (hydra/launcher=slurm)"),
    (r"^(?:sbatch|srun|squeue|scancel|scontrol|sacct|sinfo)\b", "a SLURM cluster"),
    (r"^(?:kaggle|wandb)\b", "an account and the network"),
    (r"^unzip\b", "a downloaded archive"),
    (r"^python -m advmed\.data\.download (?!list\b)", "a download or a downloaded folder"),
    (r"^python experiments/benchmarks/", "a benchmark's timings, not a smoke run"),
    (r"^make (?:demo|install|test(?:-\w+)?|bench(?:-gpu)?|slurm-up|slurm-down|docs(?:-serve)?)\b",
     "a make target that runs a whole pipeline, the test suite or an installation"),
]

_ENTRY = "tests/entrypoints/"
_SNAP_RECIPE = _ENTRY + "test_snap.py::test_make_paper_snap_pipeline_at_tiny_sizes_over_two_seeds"
# Commands run at smoke size by another test of the suite: (pattern of the command's words, that test).
RUN_ELSEWHERE = [
    # the papers' make targets and the steps of their recipes, at tiny sizes
    (r"make paper-snap( SEEDS=0,1,2)?$", _SNAP_RECIPE),
    (r"python -m advmed\.train experiment=snap/synthetic_resnet50 test=false ",
     _SNAP_RECIPE),
    (r"python -m advmed\.evaluate -m experiment=snap/synthetic_resnet50 \S+ attack\.area_fraction=",
     _SNAP_RECIPE),
    (r"python experiments/snap/aggregate\.py \S+ --headline", _SNAP_RECIPE),
    # the blob-count sweep is that recipe's evaluation and aggregation sweeping another setting of the attack
    (r"python -m advmed\.evaluate -m experiment=snap/synthetic_resnet50 \S+ attack\.num_blobs=",
     _SNAP_RECIPE),
    (r"python experiments/snap/aggregate\.py \S+ --key ", _SNAP_RECIPE),
    (r"python -m advmed\.train experiment=snap/universal ", _ENTRY + "test_snap.py::test_universal_patch_trains_applies_and_restores"),
    (r"python -m advmed\.evaluate experiment=snap/synthetic_resnet50 \S+ attack\.patch_path=",
     _ENTRY + "test_snap.py::test_universal_patch_trains_applies_and_restores"),
    (r"make paper-pervin$", _ENTRY + "test_pervin.py::test_make_paper_pervin_writes_both_tables"),
    (r"make paper-chen$", _ENTRY + "test_chen.py::test_make_paper_chen_writes_table1"),
    (r"python -m advmed\.evaluate experiment=chen/unet .*attack=deformation",
     _ENTRY + "test_chen.py::test_a_trained_attacker_is_an_attack_for_evaluate"),
    (r"python -m advmed\.augment experiment=chen/unet .*attack=deformation",
     _ENTRY + "test_chen.py::test_a_trained_attacker_writes_an_augmented_copy_that_reruns_identically"),
    # the recipe is one command, experiments/lockshin/pipeline.py, which the test runs at --scale smoke
    (r"make paper-lockshin$", _ENTRY + "test_lockshin_pipeline.py::test_the_smoke_pipeline_writes_table1_with_every_stage_recorded"),
    (r"make paper-robust-training$", _ENTRY + "test_robust_training.py::test_make_paper_robust_training_at_tiny_sizes"),
    (r"make paper-robust-training SEEDS=0,1,2$", _ENTRY + "test_robust_training.py::test_make_paper_robust_training_over_two_seeds"),
    # experiment=pgd_study/train_size is pgd_study/synthetic swept over data.train_fraction
    (r"python -m advmed\.train (-m )?experiment=pgd_study/(synthetic|train_size)$",
     _ENTRY + "test_train.py::test_training_runs_the_pgd_study_when_configured"),
    (r"python experiments/pgd_study/aggregate\.py ", "tests/studies/test_pgd_study.py::test_aggregation_collects_the_jobs_of_a_multirun"),
    (r"python -m advmed\.studies\.papers\.readme_figures record ", "tests/studies/test_readme_figures.py::test_record_render_check"),
    (r"make figures$", "tests/studies/test_readme_figures.py::test_record_render_check"),
    # the same jobs as a real multirun, a resume and a model's tiny run
    (r"python -m advmed\.train -m experiment=demo attack\.eps=0\.02,0\.05$",
     _ENTRY + "test_multirun.py::test_basic_multirun_makes_one_directory_per_override"),
    (r"python -m advmed\.train -m hydra/launcher=local experiment=demo ",
     _ENTRY + "test_multirun.py::test_submitit_local_launcher_runs_the_same_sweep"),
    (r"python -m advmed\.train experiment=demo hydra\.run\.dir=\S+ ckpt_path=last$",
     _ENTRY + "test_resume.py::test_ckpt_path_last_without_a_checkpoint_starts_fresh"),
    (r"python -m advmed\.train model=deformation data=synthetic_ct debug=tiny$", _ENTRY + "test_debug_tiny.py::test_every_model_has_a_tiny_run"),
    # the same trainings of the tiny synthetic-histology classifier: FGSM on half of each batch (at another eps),
    # and TRADES, one of that comparison's six fits
    (r"python -m advmed\.train experiment=demo attack@train_attack=fgsm train_attack\.eps=\S+ model\.adv_fraction=0\.5$",
     _ENTRY + "test_train.py::test_adversarial_training_runs_from_command_line_overrides"),
    (r"python -m advmed\.train experiment=demo objective=trades ", _ENTRY + "test_robust_training.py::test_make_paper_robust_training_at_tiny_sizes"),
    (r"python -m advmed\.collect ", _ENTRY + "test_collect.py::test_plot_of_a_metric_against_an_override_has_one_point_per_finished_job"),
    (r"python -m advmed\.data\.download list$", "tests/data/download/test_published_values.py::test_nothing_reaches_the_network_without_a_download"),
]
# Setting up the checkout the tests themselves run in (fetching it, installing it).
TOOLING = [r"git clone ", r"cd ", r"python -m venv ", r"\S*pip install "]
# Jobs run only by `make test-full` (marked `slow`): minutes even at smoke size, on 2 CPU cores.
SLOW = [
    # the whole robustness card: every corruption at 5 severities, stain shifts, 3 attacks at 4 eps (5-8 min);
    # `make test` runs the card's part of robustness.md and test_card.py a small card
    r"python -m advmed\.evaluate ckpt_path=\S+ (data=synthetic_ct )?suite=card$",
    # SEA at its 300 iterations per loss (~75 s each); `make test` runs it at 3 in test_pervin.py (make paper-pervin)
    r".* attack=sea\b",
]
# Overrides a command's smoke run adds to one of its overrides, and why.
SMOKE_EXCEPTIONS = {
    # MedMNIST-C's stain deposits are drawn in pixels of its 224 px images: at debug=tiny's 32 px the run stops
    # with a message saying so (52 px at severity 5); the demo's own 64 px
    "data.augment.corruptions=all": ["data.image_size=64"],
}
# The PGD study attacks debug=tiny's 32 images at every eps of the command: two eps are enough here.
STUDY_CAPS = {"study.eps": "[0.01,0.2]"}
QUIET = ["trainer.enable_progress_bar=false"]
# What a command takes from an earlier step, filled in when it runs.
CHECKPOINT, COPY = "TINY_CHECKPOINT", "COPY_FOLDER"


def _flat(node: dict, prefix: str = "") -> dict[str, str]:
    """``{"data": {"image_size": 32}}`` -> ``{"data.image_size": "32"}``."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


TINY_VALUES = _flat(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "debug" / "tiny.yaml")))


def needs_full_scale(command: Command) -> str | None:
    """What the command plainly needs beyond a CPU and the procedural data, or None."""
    return next((why for pattern, why in NEEDS_FULL_SCALE if re.search(pattern, words(command))), None)


def run_elsewhere(command: Command) -> str | None:
    """The test that runs the command at smoke size, when RUN_ELSEWHERE names one."""
    return next((test for pattern, test in RUN_ELSEWHERE if re.match(pattern, words(command))), None)


def is_tooling(command: Command) -> bool:
    return any(re.match(pattern, words(command)) for pattern in TOOLING)


def smoke_overrides(entry: str, overrides: list[str]) -> list[str]:
    """A job's overrides at smoke size (the rules of the module docstring)."""
    smoke = []
    for override in overrides:
        key, _, value = override.partition("=")
        name = key.lstrip("+~")
        if name.startswith(("hydra.", "hydra/")):
            continue  # where Hydra writes and how it launches: the test's folder, in this process
        if name == "ckpt_path" and not (entry == "advmed.train" and value == "last"):  # last: resume, a training's own
            value = CHECKPOINT
        elif name == "output_dir":
            value = COPY
        elif name in TINY_VALUES:
            value = TINY_VALUES[name]
        smoke.append(f"{key}={value}" if "=" in override else override)
        smoke += SMOKE_EXCEPTIONS.get(override, [])
    return smoke if "debug=tiny" in smoke else [*smoke, "debug=tiny"]


def _jobs() -> dict[str, tuple[str, list[str], list[Command]]]:
    """The jobs of the unmarked entry-point commands not run elsewhere, by their smoke overrides (the test id)."""
    jobs: dict[str, tuple[str, list[str], list[Command]]] = {}
    for command in COMMANDS:
        entry = command.advmed_module
        if command.full_scale is not None or entry not in ENTRY_POINTS or run_elsewhere(command):
            continue
        for overrides in override_sets(command.arguments):
            smoke = smoke_overrides(entry, overrides)
            name = " ".join([entry.split(".")[1], *(o for o in smoke if o != "debug=tiny")])
            jobs.setdefault(name, (entry, smoke, []))[2].append(command)
    return jobs


JOBS = _jobs()


def _param(name: str):
    _, _, commands = JOBS[name]
    slow = any(re.match(pattern, words(c)) for pattern in SLOW for c in commands)
    return pytest.param(name, marks=pytest.mark.slow, id=name) if slow else pytest.param(name, id=name)


@pytest.fixture(scope="session")
def tiny_unet_run(tmp_path_factory) -> Path:
    """The tiny U-Net on synthetic CT of tests/entrypoints/test_card.py: the same recipe under the same name,
    so that it is trained once, by whichever test asks first."""
    from advmed.train import train

    def fit(run_dir: Path) -> Path:
        train(compose_config("train", UNET, run_dir))
        return run_dir

    return build_once(tmp_path_factory, "card_unet", fit)


# The fixture whose run directory holds the tiny checkpoint of each procedural dataset.
CHECKPOINTS = {"synthetic_histology": "trained_run", "synthetic_ct": "tiny_unet_run"}


def _resolved(config: str, overrides: list[str], folder: Path) -> dict:
    """The job's config as it runs, without Hydra's node (which only names the choices that made it)."""
    cfg = OmegaConf.to_container(compose_config(config, overrides, folder), resolve=True)
    return {k: v for k, v in cfg.items() if k != "hydra"}


@cache
def _trained_run_config(folder: Path) -> dict:
    """The config of the entry-point tests' ``trained_run`` (tests/entrypoints/conftest.py)."""
    return _resolved("train", [*TINY, *SHARED_RUN], folder)


def _run(config: str, overrides: list[str], folder: Path) -> Path:
    """Run the entry point's job in this process, as `python -m advmed.<config>` would, into ``folder``."""
    job: Callable = getattr(importlib.import_module(f"advmed.{config}"), config)
    job(compose_config(config, [o.replace(COPY, str(folder / "copy")) for o in [*overrides, *QUIET]], folder))
    return folder


def _record_problem(config: str, run_dir: Path) -> str | None:
    """What is missing from the record a job of ``config`` leaves in ``run_dir``, or None."""
    if (run_dir / "card.json").is_file():
        summary = json.loads((run_dir / "card.json").read_text())["summary"]
        clean = summary["clean"][summary["metric"]]
        return None if 0.0 <= clean <= 1.0 else f"card.json's clean {summary['metric']} is {clean}"
    if config == "study":
        rates = json.loads((run_dir / "summary.json").read_text())["success_rate"]
        return None if rates and all(0.0 <= r <= 1.0 for r in rates.values()) else f"summary.json's success rates: {rates}"
    if config in ("augment", "generate"):
        rows = (run_dir / "copy" / "manifest.csv").read_text().splitlines()[1:]
        return None if rows else "the copy's manifest.csv lists nothing"
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    clean = metrics.get("test/acc", metrics.get("test/dice"))
    if clean is None or not 0.0 <= clean <= 1.0:
        return f"metrics.json holds no clean test accuracy or Dice in [0, 1]: {metrics}"
    if config == "train" and not (run_dir / "checkpoints" / "best.ckpt").is_file():
        return "the training left no checkpoints/best.ckpt"
    return None


@pytest.mark.e2e  # runs the entry points: `make test-fast` leaves it out
@pytest.mark.parametrize("job", [_param(name) for name in JOBS])
def test_the_guides_jobs_run_at_smoke_size(job, request, tmp_path_factory):
    """The job of the unmarked commands that compose to these smoke overrides runs and leaves its record."""
    entry, overrides, commands = JOBS[job]
    shown = "\n".join(f"  {c.page}: {c.text}" for c in commands)
    config = entry.split(".")[1]
    compare = shared_root(tmp_path_factory) / "docs_compare"  # one folder: the same job resolves the same
    probe = compose_config(config, overrides, compare)
    if CHECKPOINT in " ".join(overrides):
        data = probe.hydra.runtime.choices.data
        assert data in CHECKPOINTS, f"no tiny checkpoint of data={data} in CHECKPOINTS, for:\n{shown}"
        ckpt = request.getfixturevalue(CHECKPOINTS[data]) / "checkpoints" / "best.ckpt"
        overrides = [o.replace(CHECKPOINT, str(ckpt)) for o in overrides]
    if "eps" in (probe.get("study") or {}):  # a job that runs the study (debug=tiny alone leaves max_images)
        overrides += [f"{k}={v}" for k, v in STUDY_CAPS.items() if not any(o.startswith(f"{k}=") for o in overrides)]
    resolved = _resolved(config, overrides, compare)
    if config == "train" and resolved == _trained_run_config(compare):
        run_dir = request.getfixturevalue("trained_run")  # this very job, trained once for the entry-point tests
    else:
        digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]
        try:
            run_dir = build_once(tmp_path_factory, f"docs_job_{digest}", lambda folder: _run(config, overrides, folder))
        except Exception as error:
            raise AssertionError(f"a command of the guides fails at smoke size ({overrides}):\n{shown}\n"
                                 f"{type(error).__name__}: {error}") from error
    problem = _record_problem(config, run_dir)
    assert problem is None, f"{problem}, after the smoke run of:\n{shown}"


def test_the_guides_have_jobs_of_each_entry_point_to_run():
    """The extraction finds the jobs (an empty list would make the runs above vacuous)."""
    assert {entry for entry, _, _ in JOBS.values()} >= {"advmed.train", "advmed.evaluate", "advmed.study"}
    assert len(JOBS) >= 15


def test_commands_that_need_full_scale_are_marked():
    problems = [f"{c.page}: {c.text}\n    -> needs {needs_full_scale(c)}"
                for c in COMMANDS if c.full_scale is None and needs_full_scale(c)]
    assert not problems, ("commands of the guides that need full scale and do not say so: put a line "
                          "`# full scale only: <why>` above each in its block, or make it runnable at smoke size "
                          "(tests/docs/test_doc_commands_run.py):\n" + "\n".join(problems))


def test_every_full_scale_mark_says_why():
    bare = [f"{c.page}: {c.text}" for c in COMMANDS if c.full_scale == ""]
    assert not bare, "`# full scale only` without its reason (`# full scale only: <why>`) above:\n" + "\n".join(bare)


def test_every_other_command_is_run_at_smoke_size():
    """Each unmarked command is a job run above, is run by the test RUN_ELSEWHERE names, or is TOOLING."""
    unaccounted = [f"{c.page}: {c.text}" for c in COMMANDS if c.full_scale is None
                   and c.advmed_module not in ENTRY_POINTS and not run_elsewhere(c) and not is_tooling(c)]
    assert not unaccounted, ("commands of the guides that no test runs: run it at smoke size in a test and name "
                             "that test in RUN_ELSEWHERE (tests/docs/test_doc_commands_run.py), or mark it "
                             "`# full scale only: <why>`:\n" + "\n".join(unaccounted))


@pytest.mark.parametrize(("pattern", "test"), RUN_ELSEWHERE, ids=[re.sub(r"\\(.)", r"\1", p) for p, _ in RUN_ELSEWHERE])
def test_the_tests_named_for_commands_exist(pattern, test):
    """A test RUN_ELSEWHERE names is in its file, and the pattern still matches an unmarked command of the guides."""
    path, name = test.split("::")
    assert (REPO_ROOT / path).is_file(), f"{path} does not exist"
    assert re.search(rf"^def {name}\(", (REPO_ROOT / path).read_text(), re.M), f"{path} has no test {name}"
    assert any(c.full_scale is None and re.match(pattern, words(c)) for c in COMMANDS), \
        f"no unmarked command of the guides matches {pattern!r}: remove it from RUN_ELSEWHERE"
