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
from torch.utils.data import Dataset

from advmed.attacks import build_attack
from advmed.data.base import SPLITS, concat_datasets
from advmed.data.writers import DatasetWriter, code_version, item_names, verify_copy
from advmed.models import load_module
from advmed.utils.files import file_sha256
from advmed.utils.job_status import record_job_status
from advmed.utils.library_noise import quiet_library_noise
from advmed.utils.resolvers import register_resolvers
from advmed.utils.run import check_required, plain, seed_run

register_resolvers()
quiet_library_noise()

# Data settings that change how the data is loaded or trained on, never the bytes of a copy of a
# full split: a run resumed with other values is the same run.
RUNTIME_DATA_KEYS = ("batch_size", "num_workers", "pin_memory", "train_fraction", "extra_train_roots", "augment")


def pick_device(name: str) -> torch.device:
    """``auto``: cuda when available, else cpu; any other value as torch names it."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def with_extra_roots(datamodule, dataset: Dataset, split: str) -> tuple[Dataset, list[str], list[dict]]:
    """``dataset`` followed by every ``data.extra_train_roots`` folder (the training set as training
    reads it, e.g. real + synthetic tiles), item names that cannot collide (an extra item's file
    name starts with its folder's name), and each folder's identity (path and the digest of its
    manifest, which must be complete)."""
    roots = list(datamodule.extra_train_roots)
    if split != "train" or not roots:
        raise ValueError(
            f"include_extra_train_roots=true copies the training split with its data.extra_train_roots, but split={split} "
            f"and data.extra_train_roots={roots}: use split=train and list the folders to add, or drop the option"
        )
    names, extras, roots_identity = item_names(dataset, split), datamodule.extra_train_datasets(), []
    for root, extra in zip(roots, extras):
        folder = Path(root).expanduser()
        for name in item_names(extra, "extra"):  # <CLASS>/<stem> -> <CLASS>/<folder>_<stem>
            head, _, stem = name.rpartition("/")
            names.append(f"{head}/{folder.name}_{stem}" if head else f"{folder.name}_{stem}")
        if (folder / "manifest.csv").exists() or (folder / "run.json").exists():
            digest = verify_copy(folder, f"complete {folder} first (rerun the command that wrote it: it resumes)")
            roots_identity.append({"path": str(folder.resolve()), "manifest_sha256": digest["manifest_sha256"]})
        else:  # a folder of the user's own: its listing identifies it
            roots_identity.append({"path": str(folder.resolve()), "num_items": len(extra)})
    return concat_datasets([dataset, *extras]), names, roots_identity


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
        # A generator or patch the attack loads is part of what it does: retrained at the same path, it is another run.
        **{f"attack_{key}_sha256": file_sha256(Path(value).expanduser()) for key, value in plain(cfg.attack).items()
           if key.endswith(("ckpt_path", "patch_path")) and value},
        "data": {k: v for k, v in data_cfg.items() if k not in RUNTIME_DATA_KEYS},
        "split": split,
        "seed": seed,
        "batch_size": batch_size,
    }
    dataset, names = datamodule.full_split(split), None
    if cfg.get("include_extra_train_roots"):
        dataset, names, identity["extra_train_roots"] = with_extra_roots(datamodule, dataset, split)
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

    def produce(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack(module, x.to(device), y.to(device))

    n = writer.write(
        dataset, produce, names=names or item_names(dataset, split), batch_size=batch_size, seed=seed,
        num_workers=int(getattr(datamodule, "num_workers", 0)),
    )
    print(f"{n} attacked {split} items written to {out} (add them to training with data.extra_train_roots=[{out}])")
    return n, out


@hydra.main(version_base="1.3", config_path="../conf", config_name="augment")
@record_job_status
def main(cfg: DictConfig) -> None:
    augment(cfg)


if __name__ == "__main__":
    main()
