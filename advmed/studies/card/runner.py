"""Run a robustness card: load the checkpoint and the data once, then measure every condition
(clean, corruptions, stain shifts, attacks) with the module's own test step, one atomic JSON per
condition, so that a killed card rerun into the same folder skips what is already measured.

    python -m advmed.evaluate ckpt_path=<run>/checkpoints/best.ckpt suite=card
    python -m advmed.evaluate ckpt_path=... suite=card hydra.run.dir=<the killed card's folder>   # resume
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from advmed.attacks import build_attack
from advmed.attacks.natural_shift import NaturalShift
from advmed.corruptions import corruptions_for, stain_shifts
from advmed.models import load_module
from advmed.studies.card.conditions import Condition, card_conditions
from advmed.studies.card.counts import ConfusionCounts, balanced_accuracy
from advmed.studies.card.report import write_card
from advmed.studies.card.summary import card_metrics
from advmed.utils.files import file_sha256, write_json
from advmed.utils.progress import emit
from advmed.utils.run import (
    build_trainer,
    check_required,
    data_name,
    finish_loggers,
    output_dir,
    plain,
    seed_run,
)

CONDITIONS_DIR = "conditions"
# The card's metrics of each task, and the test-step keys they come from (clean, shifted).
TASK_METRICS = {
    "classification": {"acc": ("test/acc", "test/adv_acc")},
    "segmentation": {"dice": ("test/dice", "test/adv_dice"), "iou": ("test/iou", "test/adv_iou"),
                     "pixel_acc": ("test/pixel_acc", "test/adv_pixel_acc")},
}


def data_traits(datamodule) -> tuple[str, str | None]:
    """The data's modality (``histology``, ``ct``, ``xray``) and stain (``he`` or None), as the
    datamodule declares them."""
    modality = getattr(datamodule, "modality", None)
    if modality is None:
        raise ValueError(f"{type(datamodule).__name__} declares no modality (histology, ct, xray), so the card cannot "
                         "choose its corruptions: set suite.modality=<one of them>")
    return str(modality), getattr(datamodule, "stain", None)


def choose_shifts(suite: dict[str, Any], modality: str, stain: str | None, channels: int):
    """The corruptions and stain shifts of the card (each a name -> Shift dict)."""
    names = suite.get("corruptions", "all")
    corruptions = {} if names in (None, False, "none", []) else corruptions_for(modality, None if names == "all" else names)
    use_stain = suite.get("stain", "auto")
    if use_stain == "auto":
        use_stain = stain == "he" and channels == 3
    elif use_stain and (stain != "he" or channels != 3):
        raise ValueError(f"suite.stain=true, but stain shifts are defined for H&E (3-channel RGB) data and this data is "
                         f"{modality} with {channels} channel(s) (stain={stain}): set suite.stain=false (or auto)")
    stains = stain_shifts(suite.get("stain_shifts"), reference=suite.get("stain_reference")) if use_stain else {}
    return corruptions, stains


def card_identity(cfg: DictConfig, module, split: str = "test") -> dict[str, Any]:
    """What makes two cards comparable condition by condition: the weights, the data, the split, the seed."""
    data = plain(cfg.data)
    identity = {"ckpt_sha256": file_sha256(cfg.ckpt_path), "data": data, "split": split, "seed": int(cfg.seed)}
    identity["key"] = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return identity


def read_done(path: Path, condition: Condition, key: str) -> dict[str, Any] | None:
    """The stored result of ``condition`` when this card already measured it; None when not yet.
    A result of another card, or of this condition with other settings, is refused: never mixed."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as e:  # writes are atomic: this is someone's hand edit or another tool
        raise ValueError(f"{path} is not a card condition (JSON error: {e}): delete it to measure it again") from e
    if stored.get("card_key") != key:
        raise ValueError(f"{path.parent.parent} holds a card of another checkpoint, data, split or seed "
                         f"(card key {stored.get('card_key')} here, {key} now): give the card its own folder "
                         "(hydra.run.dir=...) or delete that one")
    if stored.get("digest") != condition.digest():
        raise ValueError(f"{path} measured {condition.id} with other settings than this card's "
                         f"({stored.get('settings')} vs {condition.settings}): delete it (or the folder) to measure "
                         "it with the new ones")
    return stored


def measure(trainer, module, datamodule, condition: Condition, attack, counts: ConfusionCounts, task: str,
            seed: int) -> dict[str, Any]:
    """Run the test split under ``condition`` and return its metrics (and every test/* value logged)."""
    module.test_attack = attack
    start = time.perf_counter()
    logged = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    elapsed = time.perf_counter() - start
    logged = {k: float(v) for k, v in logged.items()}
    column = 0 if condition.kind == "clean" else 1
    metrics = {name: logged[keys[column]] for name, keys in TASK_METRICS[task].items()}
    if task == "classification":
        metrics["balanced_acc"] = balanced_accuracy(counts.clean if column == 0 else counts.shifted)
    notes = attack.report_notes(logged) if attack is not None and hasattr(attack, "report_notes") else []
    return {"metrics": metrics, "logged": logged, "n": counts.images, "time_s": round(elapsed, 3), "seed": seed,
            "notes": list(notes)}


def run_card(cfg: DictConfig) -> dict[str, float]:
    """Measure every condition of ``cfg.suite`` on the test split and write the card (card.json,
    card.md, plots) into ``suite.output_dir``; returns its summary as flat ``card/...`` metrics."""
    check_required(cfg)
    suite = plain(cfg.suite)
    datamodule = instantiate(cfg.data)
    module = load_module(cfg.ckpt_path, datamodule=datamodule)
    task = getattr(module, "task", None)
    if task not in TASK_METRICS:
        raise ValueError(f"suite=card measures classifiers and segmenters; {cfg.ckpt_path} holds a "
                         f"{type(module).__name__}: give the checkpoint of a classifier or a U-Net")
    modality, stain = data_traits(datamodule) if suite.get("modality") in (None, "auto") else (suite["modality"], None)
    corruptions, stains = choose_shifts(suite, modality, stain, int(datamodule.in_channels))
    conditions, not_measured = card_conditions(suite, task=task, modality=modality, corruptions=corruptions,
                                               stains=stains, image_side=int(datamodule.image_size))
    for skipped in not_measured:
        emit(f"card: {skipped['id']} not measured: {skipped['reason']}")
    shifts = {"corruption": corruptions, "stain": stains}
    out = Path(suite.get("output_dir") or output_dir(cfg))
    identity = card_identity(cfg, module)
    # Checked up front: a folder of another card is refused before anything is measured or written.
    done = {c.id: read_done(out / CONDITIONS_DIR / c.file_name, c, identity["key"]) for c in conditions}
    # per-class counts give a classifier's balanced accuracy; a segmenter's metrics are its test step's
    counts = ConfusionCounts(int(datamodule.num_classes) if task == "classification" else None)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(counts)
    results = []
    try:
        for i, condition in enumerate(conditions, 1):
            label = f"card [{i}/{len(conditions)}] {condition.id}"
            if done[condition.id] is not None:
                emit(f"{label}: measured earlier, kept")
                results.append(done[condition.id])
                continue
            emit(f"{label} ...")
            seed_run(cfg)  # every condition from the same seed: a resumed card measures what an uninterrupted one does
            if condition.kind == "attack":
                attack = build_attack(condition.settings)
            elif condition.kind == "clean":
                attack = None
            else:
                attack = NaturalShift(shifts[condition.kind][condition.name], condition.severity, seed=int(cfg.seed))
            result = measure(trainer, module, datamodule, condition, attack, counts, task, int(cfg.seed))
            result.update(id=condition.id, kind=condition.kind, name=condition.name, severity=condition.severity,
                          eps=condition.eps, settings=condition.settings, card_key=identity["key"],
                          digest=condition.digest())
            if trainer.is_global_zero:
                write_json(out / CONDITIONS_DIR / condition.file_name, result)
            shown = " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
            emit(f"{label}: {shown} ({result['time_s']:.1f} s)")
            results.append(result)
        if not trainer.is_global_zero:
            return {}
        header = {"ckpt_path": str(cfg.ckpt_path), "module": type(module).__name__, "task": task,
                  "data": data_name(cfg), "modality": modality, "stain": stain, "identity": identity,
                  "not_measured": not_measured}
        card, paths = write_card(out, header, results, suite)
        print(paths[1].read_text())
        emit("card written: " + ", ".join(str(p) for p in paths))
        return card_metrics(card)
    finally:
        finish_loggers(trainer.loggers)
