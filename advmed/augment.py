"""Write an attacked copy of a dataset split (offline adversarial augmentation) that its own
DataModule reads back as an extra training folder.

    python -m advmed.augment ckpt_path=<run dir>/checkpoints/best.ckpt attack=fgsm attack.eps=0.1 \\
        output_dir=data/fgsm_0.1
    python -m advmed.train data.extra_train_roots=[data/fgsm_0.1]        # real + attacked training set

Any attack (``attack=inverse_fgsm``, ``attack=pgd``, ...), any advmed DataModule (``data=...``,
``split=train|val|test``) and any advmed checkpoint (checked against the data). The layout is
the data's own (``datamodule.copy_layout()``: class folders for classification, PNG image/mask
pairs for segmentation). Files are written atomically; rerunning the same command completes a
killed run with the same bytes; ``run.json`` records the provenance and ``manifest.csv`` the
items (:mod:`advmed.data.writers`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from advmed.attacks import build_attack
from advmed.data.base import SPLITS
from advmed.data.writers import DatasetWriter, code_version, item_names
from advmed.models import load_module
from advmed.utils.files import file_sha256
from advmed.utils.resolvers import register_resolvers
from advmed.utils.run import check_required, plain, seed_run

register_resolvers()

# Data settings that change how the data is loaded or trained on, never the bytes of a copy of a
# full split: a run resumed with other values is the same run.
RUNTIME_DATA_KEYS = ("batch_size", "num_workers", "pin_memory", "train_fraction", "extra_train_roots", "augment")


def pick_device(name: str) -> torch.device:
    """``auto``: cuda when available, else cpu; any other value as torch names it."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def augment(cfg: DictConfig) -> tuple[int, Path]:
    """Write the attacked copy of ``cfg.split`` of ``cfg.data`` to ``cfg.output_dir``; return
    ``(number of items, output folder)``."""
    check_required(cfg)
    attack = build_attack(cfg.get("attack"))
    if attack is None:
        raise ValueError(
            "advmed.augment needs an attack: choose one with attack=<name>, e.g. attack=fgsm attack.eps=0.1 "
            "(or attack=inverse_fgsm, attack=pgd, ...)"
        )
    out = Path(cfg.output_dir).expanduser()  # a missing output_dir fails before anything loads
    split = str(cfg.split)
    if split not in SPLITS:
        raise ValueError(f"split={split} must be one of {list(SPLITS)}")
    seed = int(cfg.seed)
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    device = pick_device(str(cfg.device))
    datamodule = instantiate(cfg.data)
    module = load_module(cfg.ckpt_path, datamodule=datamodule, map_location=device)
    if device.type == "cuda":  # reproducible bytes for a resumed run (as far as CUDA allows)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    seed_run(cfg)

    ckpt_path = Path(cfg.ckpt_path).expanduser()
    data_cfg = plain(cfg.data)
    batch_size = int(cfg.batch_size or datamodule.batch_size)
    identity = {
        "checkpoint_sha256": file_sha256(ckpt_path),
        "attack": plain(cfg.attack),
        "data": {k: v for k, v in data_cfg.items() if k not in RUNTIME_DATA_KEYS},
        "split": split,
        "seed": seed,
        "batch_size": batch_size,
    }
    provenance = {
        "task": "advmed.augment",
        "checkpoint": str(ckpt_path.resolve()),
        "module": type(module).__name__,
        "attack_repr": repr(attack),
        "data_config": data_cfg,
        "device": str(device),
        "command": " ".join(sys.argv),
        **code_version(),
    }
    writer = DatasetWriter(
        out, datamodule.copy_layout(), identity, provenance,
        overwrite=bool(cfg.overwrite), progress_every_s=float(cfg.progress_every_s),
    )
    dataset = datamodule.full_split(split)

    def produce(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack(module, x.to(device), y.to(device))

    n = writer.write(
        dataset, produce, names=item_names(dataset, split), batch_size=batch_size, seed=seed,
        num_workers=int(getattr(datamodule, "num_workers", 0)),
    )
    print(f"{n} attacked {split} items written to {out} (add them to training with data.extra_train_roots=[{out}])")
    return n, out


@hydra.main(version_base="1.3", config_path="../conf", config_name="augment")
def main(cfg: DictConfig) -> None:
    augment(cfg)


if __name__ == "__main__":
    main()
