"""FidHistoryCallback: fid.csv with a first row before training and one per epoch, the same latents
at every row, train/fid, the extractor named in fid.json, resuming, and its bad settings."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from advmed.callbacks import FidHistoryCallback
from advmed.metrics.generator_fid import reference_loader
from tests.models.stylegan2_toy import BATCHES_PER_EPOCH, data, module, save_judge, trainer


@pytest.fixture(scope="module")
def judge_ckpt(tmp_path_factory):
    return save_judge(tmp_path_factory.mktemp("judge"))


def _rows(path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _fit(root, judge_ckpt, epochs: int, ckpt_path=None):
    L.seed_everything(0)
    model = module(judge_ckpt)
    callback = FidHistoryCallback(str(root), every_n_epochs=1, num_images=18, batch_size=8)
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", filename="last", save_top_k=1)
    fit = trainer(root, epochs, callbacks=[callback, checkpoint], enable_checkpointing=True)
    fit.fit(model, datamodule=data(), ckpt_path=ckpt_path)
    return model, callback, fit


def test_fid_csv_starts_before_training_adds_a_row_per_epoch_and_resumes(tmp_path, judge_ckpt):
    model, callback, fit = _fit(tmp_path, judge_ckpt, 2)
    path = tmp_path / "fid.csv"
    assert path.read_text().splitlines()[0] == "step,fid"
    rows = _rows(path)
    assert [int(r["step"]) for r in rows] == [0, BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH]  # generator steps
    fids = [float(r["fid"]) for r in rows]
    assert all(f > 0 for f in fids) and len(set(fids)) == 3
    assert float(fit.callback_metrics["train/fid"]) == pytest.approx(fids[-1], rel=1e-5)
    assert callback.metrics == {"train/fid_first": pytest.approx(fids[0], rel=1e-5), "train/fid_last": pytest.approx(fids[-1], rel=1e-5)}
    settings = json.loads((tmp_path / "fid.json").read_text())
    assert "advmed classifier penultimate 512" in settings["feature_extractor"]
    assert settings["num_real"] == 18 and settings["num_generated"] == 18 and settings["reference_split"] == "train"

    # The same latents every time: evaluating the unchanged model again gives the last row's value.
    assert callback.evaluate(model) == pytest.approx(fids[-1], rel=1e-5)

    # Resumed from the checkpoint with a new callback: the file continues, with no second step-0 row.
    _fit(tmp_path, judge_ckpt, 3, ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    resumed = _rows(path)
    assert [int(r["step"]) for r in resumed] == [0, 3, 6, 9]
    assert resumed[:3] == rows


def test_a_row_is_added_at_the_end_when_the_last_epochs_fall_between_rows(tmp_path, judge_ckpt):
    L.seed_everything(0)
    callback = FidHistoryCallback(str(tmp_path), every_n_epochs=2, num_images=9, batch_size=9)
    trainer(tmp_path, 3, callbacks=[callback]).fit(module(judge_ckpt), datamodule=data())
    assert [int(r["step"]) for r in _rows(tmp_path / "fid.csv")] == [0, 6, 9]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_epochs": 0}, r"callbacks\.fid_history\.every_n_epochs=0 must be an integer >= 1"),
        ({"num_images": 1}, r"callbacks\.fid_history\.num_images=1 must be an integer >= 2"),
        ({"num_real": 1}, r"callbacks\.fid_history\.num_real=1 must be an integer >= 2"),
        ({"batch_size": 0}, r"callbacks\.fid_history\.batch_size=0 must be an integer >= 1"),
    ],
)
def test_bad_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FidHistoryCallback(str(tmp_path), **kwargs)


def test_a_module_that_is_no_generator_or_a_run_without_datamodule_is_refused(tmp_path):
    classifier = SimpleNamespace()  # no sample / build_fid
    with pytest.raises(ValueError, match=r"FidHistoryCallback needs a class-conditional generator module .*"
                                         r"SimpleNamespace has no sample: drop callbacks\.fid_history"):
        FidHistoryCallback(str(tmp_path)).on_fit_start(None, classifier)
    with pytest.raises(ValueError, match=r"FID needs the datamodule of the run"):
        reference_loader(None, "train")


def test_real_batches_are_capped_and_shared_among_ranks():
    from advmed.metrics.generator_fid import add_real_images

    class Recorder:
        def __init__(self):
            self.seen = []

        def update(self, x, y, real):
            self.seen.append((len(x), y.tolist(), real))

    batches = [(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]) + 4 * i) for i in range(4)]
    recorder = Recorder()
    labels = add_real_images(recorder, batches, max_images=6)
    assert labels.tolist() == [0, 1, 2, 3, 4, 5] and [n for n, _, _ in recorder.seen] == [4, 2]
    rank1 = Recorder()
    assert add_real_images(rank1, batches, rank=1, world_size=2, pooled=True).tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert all(y == [0, 0, 0, 0] and real for _, y, real in rank1.seen)  # pooled: every image counts as class 0
