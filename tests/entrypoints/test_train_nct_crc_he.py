"""`python -m advmed.train data=nct_crc_he data.root=...` end to end on a folder in the real layout."""

import numpy as np
import tifffile

from tests.entrypoints.conftest import compose_config, read_metrics

CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


def write_nct_folder(root, per_class: int, seed: int = 0):
    """224x224 RGB uint8 TIFF tiles named <CLASS>-<ID>.tif, one folder per class, as on Zenodo."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            tile = rng.integers(0, 60, (224, 224, 3), dtype=np.uint8) + np.uint8(20 * label)
            tifffile.imwrite(root / name / f"{name}-{label:02d}{i:06X}.tif", tile, photometric="rgb")


def test_short_training_on_an_nct_layout_folder(tmp_path):
    from advmed.train import train

    root = tmp_path / "NCT-CRC-HE-100K"
    write_nct_folder(root, per_class=10)
    cfg = compose_config("train", [
        "data=nct_crc_he", f"data.root={root}", "data.per_class=null", "data.num_workers=0", "data.image_size=32", "data.batch_size=32",
        "model.arch=resnet18", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "attack=fgsm", "attack.eps=0.05", "callbacks.adversarial_examples.num_images=2",
    ], tmp_path / "run")
    metrics = train(cfg)
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    # Intensity alone separates these tiles, so two epochs learn more than chance (1/9).
    assert metrics["test/acc"] > 0.3
    assert read_metrics(tmp_path / "run")["test/adv_acc"] <= metrics["test/acc"]
