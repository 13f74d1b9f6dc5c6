"""The U-Net of Pervin et al.: its bottleneck and its input-size rule."""

from __future__ import annotations

import pytest
import torch

from advmed.nets import UNet


def test_unet_reaches_the_papers_bottleneck_and_keeps_the_input_size():
    net = UNet(num_classes=5, in_channels=1)  # defaults: base 16, depth 4
    shapes = []
    net.bottleneck.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape[1:])))
    assert net(torch.rand(2, 1, 128, 128)).shape == (2, 5, 128, 128)
    assert shapes == [(256, 8, 8)]


def test_unet_refuses_sizes_its_poolings_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 16"):
        UNet(num_classes=3, depth=4)(torch.rand(1, 1, 40, 40))
