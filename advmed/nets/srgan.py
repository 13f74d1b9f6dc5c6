"""The SRGAN generator (SRResNet) and discriminator of Ledig et al. 2017 (CVPR, Fig. 4), used by
Lockshin et al. 2022 (sec. 3.2) to upscale 128 px StyleGAN2 histology tiles by x2 to 256 px.

Generator: conv 9x9 -> PReLU; ``num_blocks`` residual blocks (conv3x3-BN-PReLU-conv3x3-BN + skip);
conv3x3-BN plus a long skip from the first layer; log2(scale) sub-pixel upsampling stages (conv3x3
to 4x channels -> PixelShuffle(2) -> PReLU, Shi et al. 2016); a final conv 9x9 to RGB.

Discriminator: conv3x3-LeakyReLU(0.2), then seven conv3x3-BN-LeakyReLU blocks whose strides alternate
2, 1, 2, ... and whose channels double every second block (64 -> 512 at ``width=64``), then two dense
layers (1024 units, LeakyReLU, 1 logit). Ledig et al. flatten a 6x6 map of 96 px crops; an adaptive
average pooling to ``pool_size`` x ``pool_size`` (6 by default, the same dense layer at 96 px) lets
the discriminator take any image size (the 256 px tiles of the paper, 32 px in tests).

Pixel space (DESIGN contract 1): both networks take images in [0, 1] and work in [-1, 1] inside.
The generator maps its last convolution's output ``y`` to ``(tanh(y) + 1) / 2`` (= sigmoid(2y)),
strictly inside (0, 1): no clamp in the training graph, so a pixel that overshoots the range still
passes a gradient back (a clamp would give it none, and could leave it stuck at the border).

Written here: torchvision has no super-resolution networks; the layers are torch's.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

SCALES = (2, 4)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")


class ResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN plus the identity (Ledig et al. 2017, Fig. 4, "B residual blocks")."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),  # BN's shift makes a bias redundant
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SubPixelUpsample(nn.Module):
    """x2 upsampling: conv3x3 to 4x channels -> PixelShuffle(2) -> PReLU (Shi et al. 2016)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class SRResNet(nn.Module):
    """The SRGAN generator: a low-resolution image (N, C, H, W) in [0, 1] -> (N, C, scale*H, scale*W) in (0, 1).

    Args:
        scale: upscaling factor, 2 (Lockshin et al.: 128 -> 256 px) or 4 (Ledig et al.).
        num_blocks: residual blocks (16 in Ledig et al.).
        channels: feature channels of the body (64 in Ledig et al.; small in tests).
        in_channels: image channels (3 for H&E).
    """

    def __init__(self, scale: int = 2, num_blocks: int = 16, channels: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(
                f"scale={scale!r} is not supported: SRResNet upsamples x2 per PixelShuffle stage, so scale must be one of {SCALES}"
            )
        _check_positive(num_blocks=num_blocks, channels=channels, in_channels=in_channels)
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(in_channels, channels, 9, padding=4), nn.PReLU(channels))
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(num_blocks)))
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(*(SubPixelUpsample(channels) for _ in range(int(math.log2(scale)))))
        self.tail = nn.Conv2d(channels, in_channels, 9, padding=4)

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(2.0 * x - 1.0)
        features = features + self.body_tail(self.blocks(features))  # the long skip
        y = self.tail(self.upsample(features))
        return 0.5 * (y.tanh() + 1.0)  # [-1, 1] -> [0, 1] without a clamp (module docstring)


class SRDiscriminator(nn.Module):
    """The SRGAN discriminator: images (N, C, H, W) in [0, 1], any H and W -> (N,) logits (real > 0).

    Args:
        width: channels of the first convolution; the blocks use width * (1, 2, 2, 4, 4, 8, 8) and
            the hidden dense layer 16 * width (64: Ledig et al.'s 64 -> 512 channels and 1024 units).
        pool_size: side of the adaptive average pooling before the dense layers (6: Ledig et al.'s
            6x6 map of 96 px crops).
        in_channels: image channels.
    """

    def __init__(self, width: int = 64, pool_size: int = 6, in_channels: int = 3) -> None:
        super().__init__()
        _check_positive(width=width, pool_size=pool_size, in_channels=in_channels)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        cin = width
        # (channels multiplier, stride) of the seven conv-BN-LReLU blocks of Fig. 4.
        for multiplier, stride in ((1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2)):
            cout = width * multiplier
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * pool_size * pool_size, 16 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(16 * width, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        # Logits, not probabilities: the losses use the numerically stable softplus forms.
        return self.classifier(self.pool(self.features(2.0 * x - 1.0))).squeeze(1)
