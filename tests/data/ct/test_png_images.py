"""read_png_image on grey CT stored as RGB / RGBA / LA (read as one channel, logged once per folder)
and on real colour (refused with the file's name), on PNGs written as exported datasets ship them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from advmed.data.png_pairs import read_png_image

GREY = np.arange(256, dtype=np.uint8).reshape(16, 16)


def test_grey_saved_as_rgb_reads_as_one_channel_and_is_logged_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="advmed.data.png_pairs")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        Image.fromarray(np.stack([GREY] * 3, axis=-1)).save(path)
    images = [read_png_image(path, 1) for path in paths]
    for image in images:
        assert image.shape == (1, 16, 16) and torch.equal(image[0], torch.from_numpy(GREY).float() / 255)
    lines = [r for r in caplog.records if "equal R, G, B" in r.getMessage()]
    assert len(lines) == 1 and str(tmp_path) in lines[0].getMessage()
    assert read_png_image(paths[0], 3).shape == (3, 16, 16)  # three channels asked: kept


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_grey_with_alpha_reads_as_one_channel(tmp_path, mode):
    alpha = np.full_like(GREY, 255)
    channels = [GREY] * 3 + [alpha] if mode == "RGBA" else [GREY, alpha]
    Image.fromarray(np.stack(channels, axis=-1), mode).save(tmp_path / "slice.png")
    image = read_png_image(tmp_path / "slice.png", 1)
    assert image.shape == (1, 16, 16) and torch.equal(image[0], torch.from_numpy(GREY).float() / 255)


def test_real_colour_is_refused_with_the_file_name(tmp_path):
    rgb = np.stack([GREY] * 3, axis=-1)
    rgb[3, 4, 0] = 7  # one pixel off grey
    Image.fromarray(rgb).save(tmp_path / "colour_slice.png")
    with pytest.raises(ValueError, match=r"colour_slice\.png has 3 channel\(s\) of real colour.*channels=1"):
        read_png_image(tmp_path / "colour_slice.png", 1)
