"""Every option of the config groups composes into a train config that resolves completely."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from advmed.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR

register_resolvers()


def _options(group: str) -> list[str]:
    return sorted(p.relative_to(CONFIG_DIR / group).with_suffix("").as_posix() for p in (CONFIG_DIR / group).rglob("*.yaml"))


def _compose(config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):  # what Hydra sets at run time
        cfg.paths.output_dir = "/tmp/run"
        if "logger" in cfg and cfg.logger and "wandb" in cfg.logger:
            cfg.logger.wandb.name = "job"
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("group", ["model", "trainer", "logger", "callbacks", "experiment", "debug"])
def test_every_option_resolves(group):
    for option in _options(group):
        # The universal SNAP patch attacks a trained classifier: its checkpoint has no default.
        needs_classifier = option in ("universal_patch", "snap/universal")
        # Training on an attacked copy needs the folder advmed.augment wrote.
        needs_copy = option.startswith("pervin/") and option != "pervin/unet"
        # The deformation attacker attacks a trained U-Net.
        needs_unet = option in ("deformation", "chen/deformation")
        cfg = _compose("train", [
            f"{group}={option}",
            *(["model.unet_ckpt=/u.ckpt"] if needs_unet else []),
            *(["model.classifier_ckpt=/c.ckpt"] if needs_classifier else []),
            *(["augmented_root=/copy"] if needs_copy else []),
        ])
        for key in ("num_classes", "in_channels", "image_size"):  # data-derived values flow down
            assert cfg["model"].get(key, cfg["data"][key]) == cfg["data"][key], (option, key)
        assert cfg["trainer"]["inference_mode"] is False  # attacks in test_step need gradients


def test_resnet_configs_differ_only_in_arch():
    a, b = (OmegaConf.load(CONFIG_DIR / "model" / f"resnet{n}.yaml") for n in (34, 50))
    assert a.arch == "resnet34" and b.arch == "resnet50"
    a.arch = b.arch
    assert a == b


def test_demo_experiment_sets_the_documented_job():
    cfg = _compose("train", ["experiment=demo"])
    assert cfg["model"]["arch"] == "resnet34" and cfg["attack"]["_target_"] == "advmed.attacks.FGSM"
    assert cfg["data"]["image_size"] == 64 and cfg["trainer"]["max_epochs"] == 8


@pytest.mark.parametrize("entry", ["evaluate", "study", "augment"])
def test_entry_configs_need_a_checkpoint(entry):
    with pytest.raises(Exception, match="ckpt_path"):
        _compose(entry, [])


DATA_FAMILIES = ("ct", "histology", "lymph_node", "medmnist")
ATTACK_FAMILIES = ("ensembles", "generative", "patch")


def test_config_names_match_the_code_they_build():
    """DESIGN: conf/data/pcam.yaml builds advmed/data/lymph_node/pcam.py -- a data/attack config names its module."""
    import inspect

    from hydra.utils import get_class

    for group in ("data", "attack"):
        for option in _options(group):
            target = OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml").get("_target_")
            if target is None:
                assert option == "none", f"conf/{group}/{option}.yaml builds nothing"
                continue
            module = inspect.getmodule(get_class(target)).__name__
            # modules sit in their family's folder (advmed/data/ct/ct_slices.py,
            # advmed/attacks/patch/snap.py) or at the top of their package
            package, families = ("attacks", ATTACK_FAMILIES) if group == "attack" else ("data", DATA_FAMILIES)
            expected = {f"advmed.{package}.{option}", *(f"advmed.{package}.{f}.{option}" for f in families)}
            assert module in expected, f"conf/{group}/{option}.yaml builds {target} from {module}"


@pytest.mark.parametrize("cuda, bf16, expected", [
    (False, False, {"precision": "32-true", "deterministic": "warn", "benchmark": False, "channels_last": False}),
    (True, True, {"precision": "bf16-mixed", "deterministic": False, "benchmark": True, "channels_last": True}),
    (True, False, {"precision": "16-mixed", "deterministic": False, "benchmark": True, "channels_last": True}),
])
def test_speed_options_are_on_by_default_on_a_gpu_and_off_on_a_cpu(monkeypatch, cuda, bf16, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    for model in ("resnet34", "resnet50", "unet"):
        cfg = _compose("train", [f"model={model}"])
        found = {key: cfg["trainer"][key] for key in ("precision", "deterministic", "benchmark")}
        assert {**found, "channels_last": cfg["model"]["channels_last"]} == expected, model
    # An explicit CPU run on a GPU machine keeps the CPU settings.
    cfg = _compose("train", ["trainer=cpu"])
    assert (cfg["trainer"]["precision"], cfg["model"]["channels_last"]) == ("32-true", False)


def test_compile_takes_torch_compile_arguments(tmp_path, monkeypatch):
    from advmed.models import ClassifierModule
    from advmed.train import train
    from tests.entrypoints.conftest import TINY, compose_config

    compiled = []
    original = ClassifierModule.compile

    def spy(self, **kwargs):
        compiled.append(kwargs)
        original(self, **kwargs)
        assert self._compiled_call_impl is not None  # self(x) now runs the compiled forward

    monkeypatch.setattr(ClassifierModule, "compile", spy)
    metrics = train(compose_config("train", ["experiment=demo", *TINY, "trainer.max_epochs=1", "test=false", "+trainer.limit_train_batches=2",
                                             "compile={backend: eager}"], tmp_path))
    assert compiled == [{"backend": "eager"}] and metrics["train/acc"] >= 0
