"""ClassSamplesCallback: a PNG grid per N epochs and at fit end, rows = classes, the same latents in
every grid, each tile exactly the module's sample; and its bad settings."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from advmed.callbacks import ClassSamplesCallback
from advmed.callbacks.class_samples import PAD, class_grid, label_width, tile_origin, tile_scale
from tests.models.stylegan2_toy import SIZE, data, module, save_judge, trainer


@pytest.fixture(scope="module")
def judge_ckpt(tmp_path_factory):
    return save_judge(tmp_path_factory.mktemp("judge"))


def test_grids_are_written_per_epoch_and_hold_the_modules_samples(tmp_path, judge_ckpt):
    L.seed_everything(0)
    model = module(judge_ckpt)
    callback = ClassSamplesCallback(str(tmp_path), every_n_epochs=1, samples_per_class=2, seed=5)
    trainer(tmp_path, 2, callbacks=[callback]).fit(model, datamodule=data())
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    first = np.asarray(Image.open(tmp_path / "samples" / "epoch_001.png").convert("RGB"))
    grid = np.asarray(Image.open(tmp_path / "samples" / "epoch_002.png").convert("RGB"))
    names = model.hparams.class_names
    scale = tile_scale(SIZE)
    tile, left = SIZE * scale, label_width(names)
    assert grid.shape == (PAD + 9 * (tile + PAD), left + PAD + 2 * (tile + PAD), 3)
    assert not np.array_equal(first, grid)  # the generator moved between the epochs

    # Tile (class c, column j) is sample j of class c from the seeded latents, rounded to 8 bits.
    labels = torch.arange(9).repeat_interleave(2)
    expected = (model.sample(labels, generator=torch.Generator().manual_seed(5)) * 255).round().to(torch.uint8)
    for index in range(18):
        x, y = tile_origin(index // 2, index % 2, tile, left)
        shown = grid[y:y + tile:scale, x:x + tile:scale]
        assert np.array_equal(shown, expected[index].permute(1, 2, 0).numpy()), index
    assert (grid[:, :left] < 128).any()  # the class names are drawn in the left column


def test_the_fit_end_writes_the_last_grid_between_periods(tmp_path, judge_ckpt):
    L.seed_everything(0)
    callback = ClassSamplesCallback(str(tmp_path), every_n_epochs=2, samples_per_class=1)
    trainer(tmp_path, 3, callbacks=[callback]).fit(module(judge_ckpt), datamodule=data())
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_002.png", "epoch_003.png"]


def test_grey_tiles_are_drawn_in_rgb():
    images = torch.rand(2, 1, 8, 8)
    grid = np.asarray(class_grid(images, ["a", "b"], 1))
    x, y = tile_origin(1, 0, 8 * tile_scale(8), label_width(["a", "b"]))
    shown = grid[y, x]
    assert shown[0] == shown[1] == shown[2] == round(float(images[1, 0, 0, 0]) * 255)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_epochs": 0}, r"callbacks\.class_samples\.every_n_epochs=0 must be an integer >= 1"),
        ({"samples_per_class": 0}, r"callbacks\.class_samples\.samples_per_class=0 must be an integer >= 1"),
    ],
)
def test_bad_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClassSamplesCallback(str(tmp_path), **kwargs)


def test_a_grid_of_the_wrong_number_of_images_is_refused():
    with pytest.raises(ValueError, match=r"class_grid needs 2 x 3 images \(N, 1 or 3, R, R\), got \(5, 3, 8, 8\)"):
        class_grid(torch.rand(5, 3, 8, 8), ["a", "b"], 3)
