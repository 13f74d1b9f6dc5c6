"""conf/data/*.yaml: complete, composable with Hydra, instantiable, and the source of data-derived values."""

from __future__ import annotations

import inspect

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.conftest import CONFIG_DIR
from tests.data.histology.test_nct_crc_he import write_nct_layout
from tests.data.test_medmnist import write_medmnist

DATA_CONFIGS = ("synthetic_histology", "nct_crc_he", "medmnist", "synthetic_lymph_node", "pcam", "hcd", "synthetic_ct", "ct_slices")


def _compose(name: str, *overrides: str):
    # No primary config: the data group alone, composed the way an entry config would select it.
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(overrides=[f"+data={name}", *overrides])


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_constructor_argument_is_a_config_key(name):
    cfg = OmegaConf.load(CONFIG_DIR / "data" / f"{name}.yaml")
    params = set(inspect.signature(get_class(cfg._target_)).parameters)
    assert set(cfg) - {"_target_"} == params
    assert {"num_classes", "class_names", "in_channels", "image_size"} <= set(cfg)
    assert len(cfg.class_names) == cfg.num_classes


def _check_instance(cfg, dm):
    assert dm.num_classes == cfg.data.num_classes == cfg.probe.num_classes
    assert dm.class_names == list(cfg.data.class_names)
    assert (dm.in_channels, dm.image_size) == (cfg.data.in_channels, cfg.data.image_size)
    dm.setup("test")
    x, y = dm.test_set[0]
    assert x.shape == (dm.in_channels, dm.image_size, dm.image_size) and 0 <= int(y) < dm.num_classes


# A model config reads data-derived values by interpolation; the probe stands in for it.
PROBE = "+probe.num_classes=${data.num_classes}"


def test_synthetic_histology_composes_and_instantiates():
    cfg = _compose(
        "synthetic_histology",
        PROBE,
        "data.image_size=32",
        "data.train_per_class=2",
        "data.val_per_class=1",
        "data.test_per_class=1",
    )
    _check_instance(cfg, instantiate(cfg.data))


def test_nct_crc_he_composes_and_instantiates(tmp_path, monkeypatch):
    root = write_nct_layout(tmp_path / "NCT-CRC-HE-100K", per_class=3)
    monkeypatch.setenv("ADVMED_NCT_CRC_HE_ROOT", str(root))
    cfg = _compose(
        "nct_crc_he",
        PROBE,
        "data.per_class=3",
        "data.val_fraction=0.5",
        "data.image_size=128",
        "data.num_workers=0",
    )
    assert cfg.data.root == str(root)  # read from the environment variable
    _check_instance(cfg, instantiate(cfg.data))


def test_nct_crc_he_without_root_explains_the_download(monkeypatch):
    monkeypatch.delenv("ADVMED_NCT_CRC_HE_ROOT", raising=False)
    cfg = _compose("nct_crc_he")
    with pytest.raises(Exception, match=r"Zenodo record 1214456.*ADVMED_NCT_CRC_HE_ROOT"):
        instantiate(cfg.data)


def test_medmnist_composes_and_instantiates(tmp_path):
    path = write_medmnist(tmp_path / "pathmnist.npz", size=28, channels=3, num_classes=9)
    cfg = _compose("medmnist", PROBE, f"data.path={path}")
    _check_instance(cfg, instantiate(cfg.data))
