"""`debug=tiny` is a seconds-long smoke run of any model and of every experiment that has a smoke size:
each `conf/model/*.yaml` (with its natural data) and each such `conf/experiment/**` file is fitted and
tested by `advmed.train` in-process, at the tiny size that `conf/debug_model/tiny/<model>.yaml` names."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from advmed.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR
from tests.entrypoints.conftest import TINY, compose_config, read_metrics

register_resolvers()  # the configs are resolved here before advmed.train is imported

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.relative_to(CONFIG_DIR / "experiment").with_suffix("").as_posix()
                     for p in (CONFIG_DIR / "experiment").rglob("*.yaml"))
# The data each model goes with, as its experiments pair them (synthetic histology otherwise).
NATURAL_DATA = {"unet": "synthetic_ct", "deformation": "synthetic_ct", "universal_patch": "synthetic_lymph_node"}
# The line a model logs when debug=tiny gives it an untrained target in place of a checkpoint.
STAND_IN = "is not set: using a freshly initialised"
QUIET = ["trainer.enable_progress_bar=false"]
# The tiny run that the session fixture trained_run of tests/entrypoints/conftest.py makes (with the default
# model, resnet34, on synthetic histology); a classifier whose tiny config is the same is tested on it.
SHARED_RUN = ["attack=fgsm", "attack.eps=0.03"]
# The checkpoint a model's tiny run stands in for when it is not given (its config key), and where the model
# holds the network it loads from it.
TARGETS = {"advgan": ("model.classifier_ckpt", lambda m: m.classifier),
           "deformation": ("model.unet_ckpt", lambda m: m.unet),
           "stylegan2": ("model.fid.classifier_ckpt", lambda m: m.judge()),
           "universal_patch": ("model.classifier_ckpt", lambda m: m.classifier)}

_DATA = "needs the real dataset (data.root / data.path); its data module is tested on small files in tests/data"
_EARLIER_STAGE = "trains on advmed.augment's copy made by an earlier stage: test_pervin.py (make paper-pervin)"
_ELSEWHERE = "already smoke-tested with debug=tiny in "
LEFT_OUT = {
    "demo": _ELSEWHERE + "test_resume.py, test_collect.py and test_multirun.py",
    "pgd_study/synthetic": _ELSEWHERE + "test_train.py::test_training_runs_the_pgd_study_when_configured",
    "pgd_study/train_size": _ELSEWHERE + "test_multirun.py::test_training_set_size_sweep_is_aggregated_into_one_table",
    "snap/synthetic_resnet50": _ELSEWHERE + "test_snap.py::test_make_paper_snap_pipeline_at_tiny_sizes_over_two_seeds",
    **dict.fromkeys([f"robust_training/{m}" for m in ("standard", "mixed_fgsm", "pgd_at", "trades", "mart", "fgsm_rs")],
                    _ELSEWHERE + "test_robust_training.py::test_make_paper_robust_training_at_tiny_sizes (all six)"),
    "pervin/unet_fgsm": _EARLIER_STAGE,
    "pervin/unet_invfgsm": _EARLIER_STAGE,
    **dict.fromkeys(["lockshin/advgan", "lockshin/classifier", "lockshin/srgan", "lockshin/stylegan2",
                     "pgd_study/nct_crc_he", "pgd_study/pathmnist", "pgd_study/pneumoniamnist",
                     "snap/hcd_resnet50", "snap/pcam_resnet50"], _DATA),
}
# Fitted in `make test-full` only (~2-5 s each): the model and data of a test_every_model_has_a_tiny_run case
# with the experiment's optimiser, loss or split, which test_every_experiment_composes_at_its_models_tiny_size
# checks in the default run. The default run fits the experiments that start with no checkpoint of an
# earlier stage only under debug=tiny (an untrained target), and the StyleGAN2 one (its FID callbacks).
SLOW = {"chen/unet", "pervin/unet", "lockshin/classifier_tiny", "lockshin/srgan_tiny"}


def tiny_model_config(model: str) -> dict:
    """The `model:` values that conf/debug_model/tiny/<model>.yaml sets (unresolved)."""
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "debug_model" / "tiny" / f"{model}.yaml").model)


def run_tiny(overrides: list[str], run_dir: Path, caplog) -> None:
    """Fit and test ``debug=tiny`` with ``overrides`` in ``run_dir``, capturing advmed's warnings in caplog."""
    from advmed.train import train

    with caplog.at_level(logging.WARNING, logger="advmed"):
        train(compose_config("train", [*TINY, *QUIET, *overrides], run_dir))


def check_tiny_run(overrides: list[str], run_dir: Path) -> tuple[dict[str, float], dict, dict]:
    """What every ``debug=tiny`` run with ``overrides`` leaves in ``run_dir``: finite training losses and
    test metrics in metrics.json, and a best checkpoint at 32 px holding every model value that the
    model's tiny file sets. Returns the metrics, the resolved config and the checkpoint's hyper-parameters."""
    import torch

    cfg = OmegaConf.to_container(compose_config("train", [*TINY, *QUIET, *overrides], run_dir), resolve=True)
    metrics = read_metrics(run_dir)
    losses = {k: v for k, v in metrics.items() if k.startswith("train/") and k.endswith("loss")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    assert any(k.startswith("test/") and math.isfinite(v) for k, v in metrics.items()), metrics  # tested too

    hparams = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["image_size"] == cfg["data"]["image_size"] == 32

    def holds(saved, wanted, key: str) -> None:  # nested settings (model.fid) may hold more keys than tiny sets
        if isinstance(wanted, dict):
            for k, v in wanted.items():
                holds(saved[k], v, f"{key}.{k}")
        else:
            assert saved == wanted, (key, saved, wanted)

    for key in tiny_model_config(cfg["hydra"]["runtime"]["choices"]["model"]):
        holds(hparams[key], cfg["model"][key], f"model.{key}")  # the resolved value (${data.num_classes}, ...)
    return metrics, cfg, hparams


def without_choices(cfg: dict) -> dict:
    """A resolved config without its hydra node, which names the config choices that made it."""
    return {k: v for k, v in cfg.items() if k != "hydra"}


def resolved(node, key: str):
    """``node[key]`` resolved, as plain Python."""
    value = node[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def stands_in(model: str) -> bool:
    """Whether model's tiny run, given no checkpoint, attacks (or is judged by) an untrained network."""
    return bool({"untrained_target", "untrained_judge"} & set(tiny_model_config(model)))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_a_tiny_run(model, tmp_path, caplog, request):
    """`model=<name> debug=tiny` alone (no checkpoint of a target) fits and tests at the model's tiny size."""
    tiny_file = CONFIG_DIR / "debug_model" / "tiny" / f"{model}.yaml"
    assert tiny_file.is_file(), f"say what debug=tiny means for model={model} in conf/debug_model/tiny/{model}.yaml"
    assert stands_in(model) == (model in TARGETS), "name the checkpoint its stand-in replaces in TARGETS"
    shared = OmegaConf.to_container(compose_config("train", [*TINY, *SHARED_RUN], tmp_path / "shared"), resolve=True)
    overrides = [f"model={model}", *SHARED_RUN]
    mine = OmegaConf.to_container(compose_config("train", [*TINY, *overrides], tmp_path / "shared"), resolve=True)
    if model not in NATURAL_DATA and without_choices(mine) == without_choices(shared):
        run_dir = request.getfixturevalue("trained_run")  # this very run, already made: no need to train it twice
    else:
        overrides = [f"model={model}", f"data={NATURAL_DATA.get(model, 'synthetic_histology')}"]
        run_dir = tmp_path
        run_tiny(overrides, run_dir, caplog)
        assert (STAND_IN in caplog.text) == stands_in(model), caplog.text
    check_tiny_run(overrides, run_dir)


def _experiment(name: str):
    if name in LEFT_OUT:
        return pytest.param(name, marks=pytest.mark.skip(reason=LEFT_OUT[name]))
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


@pytest.mark.parametrize("experiment", [_experiment(name) for name in EXPERIMENTS])
def test_every_experiment_with_a_smoke_size_has_a_tiny_run(experiment, tmp_path, caplog):
    """`experiment=<name> debug=tiny` fits and tests, with no checkpoint of an earlier stage."""
    overrides = [f"experiment={experiment}"]
    run_tiny(overrides, tmp_path, caplog)
    _, cfg, _ = check_tiny_run(overrides, tmp_path)
    assert cfg["task_name"] == OmegaConf.load(CONFIG_DIR / "experiment" / f"{experiment}.yaml").task_name
    assert (STAND_IN in caplog.text) == stands_in(cfg["hydra"]["runtime"]["choices"]["model"]), caplog.text


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_at_its_models_tiny_size(experiment, tmp_path):
    """debug=tiny comes after the experiment: every value of the model's tiny file (and 32 px, two epochs) wins."""
    cfg = compose_config("train", [*TINY, f"experiment={experiment}"], tmp_path)
    tiny = OmegaConf.load(CONFIG_DIR / "debug_model" / "tiny" / f"{cfg.hydra.runtime.choices.model}.yaml")
    expected = OmegaConf.merge(cfg, tiny)  # the tiny values, resolved in the run's config
    for key in tiny.model:
        assert resolved(cfg.model, key) == resolved(expected.model, key), key
    assert cfg.data.image_size == 32 and cfg.trainer.max_epochs == 2


@pytest.mark.parametrize("model", sorted(TARGETS))
def test_the_stand_in_is_fixed_and_a_given_checkpoint_is_used_as_always(model, tmp_path, caplog):
    """Without a checkpoint the tiny model attacks (or is judged by) the same untrained network at every build
    (so a module rebuilt from its checkpoint meets it again); with one, that checkpoint's network, no stand-in."""
    import torch

    from advmed.models import ClassifierModule
    from advmed.models.base import CLASS_KEY, class_path
    from advmed.models.segmentation import SegmentationModule
    from advmed.train import build_model

    key, target_of = TARGETS[model]
    overrides = [*TINY, f"model={model}", f"data={NATURAL_DATA.get(model, 'synthetic_histology')}"]
    cfg = compose_config("train", overrides, tmp_path)
    with caplog.at_level(logging.WARNING, logger="advmed"):
        first, again = (target_of(build_model(cfg)).state_dict() for _ in range(2))
    assert caplog.text.count(STAND_IN) == 2 and all(torch.equal(first[k], again[k]) for k in first)

    torch.manual_seed(1)  # weights other than the stand-in's
    data = {k: cfg.data[k] for k in ("num_classes", "in_channels", "image_size")}
    data["class_names"] = list(cfg.data.class_names)
    target = SegmentationModule(**data, base_width=8, depth=2) if model == "deformation" else ClassifierModule("resnet18", **data)
    ckpt = tmp_path / "target.ckpt"
    torch.save({"state_dict": target.state_dict(), "hyper_parameters": dict(target.hparams),
                CLASS_KEY: class_path(type(target))}, ckpt)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="advmed"):
        used = target_of(build_model(compose_config("train", [*overrides, f"{key}={ckpt}"], tmp_path))).state_dict()
    assert STAND_IN not in caplog.text
    assert all(torch.equal(used[k], v) for k, v in target.state_dict().items())


def test_the_classifier_meaning_is_unchanged(tmp_path):
    """Other tests rely on debug=tiny's classifier: ResNet18 on 32 px images, 10 % of the split, every
    batch of it for two epochs."""
    cfg = compose_config("train", TINY, tmp_path)
    assert (cfg.model.arch, cfg.data.image_size, cfg.data.train_fraction, cfg.data.batch_size) == ("resnet18", 32, 0.1, 32)
    assert cfg.trainer.max_epochs == 2 and cfg.trainer.get("limit_train_batches") is None
