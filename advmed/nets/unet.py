"""U-Net (Ronneberger et al. 2015) as Pervin et al. describe it for 128x128 CT slices.

Encoder: ``depth`` blocks of two 3x3 convolutions, each followed by 2x2 max pooling, widths
doubling from ``base_width``; with the defaults (16, depth 4) a 128x128 input reaches the paper's
8x8x256 bottleneck. Decoder: 2x2 transposed convolutions (stride 2) back up, each concatenated
with the encoder features of the same scale (the skip connections) and followed by two 3x3
convolutions; a 1x1 convolution gives one logit per class and pixel (multi-class softmax
outside, in the loss). Inputs are [0, 1] pixels (DESIGN contract 1); ``mean``/``std`` standardise
them inside the network.

Written here rather than taken from a library: torchvision has no U-Net, and MONAI's
``BasicUNet``/``UNet`` differ from the paper's layout (residual units, strided convolutions
instead of pooling, fixed feature counts per level).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, batch_norm: bool, dropout: float) -> nn.Sequential:
    """Two (3x3 conv -> [BN] -> ReLU) with optional dropout between them (as in the Keras U-Net)."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(((in_channels, out_channels), (out_channels, out_channels))):
        layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        if i == 0 and dropout > 0:
            layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net for (N, in_channels, H, W) images in [0, 1] -> (N, num_classes, H, W) logits.

    Args:
        num_classes: output classes, background included.
        in_channels: 1 (CT) or 3.
        base_width: channels of the first block; block ``i`` has ``base_width * 2**i``.
        depth: number of poolings; H and W must be multiples of ``2**depth``.
        batch_norm: batch normalisation after every convolution (the paper does not say;
            without it SGD at lr 0.1 / momentum 0.99 diverges).
        dropout: Dropout2d rate inside each block (0 disables).
        mean, std: input standardisation ``(x - mean) / std`` applied inside the network.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        base_width: int = 16,
        depth: int = 4,
        batch_norm: bool = True,
        dropout: float = 0.0,
        mean: float = 0.5,
        std: float = 0.25,
    ) -> None:
        super().__init__()
        if depth < 1 or base_width < 1 or num_classes < 2:
            raise ValueError(f"need depth >= 1, base_width >= 1, num_classes >= 2; got {depth}, {base_width}, {num_classes}")
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.depth = depth
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            conv_block(cin, cout, batch_norm, dropout) for cin, cout in zip([in_channels, *widths[:-2]], widths[:-1])
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(widths[-2], widths[-1], batch_norm, dropout)
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, w // 2, 2, stride=2) for w in reversed(widths[1:]))
        self.decoder = nn.ModuleList(conv_block(w, w // 2, batch_norm, dropout) for w in reversed(widths[1:]))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2**self.depth
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(
                f"U-Net of depth {self.depth} needs H and W divisible by {multiple}, got {tuple(x.shape[-2:])}; "
                "resize the data (data.image_size) or lower model.depth"
            )
        x = (x - self.mean) / self.std
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = block(torch.cat([skip, up(x)], dim=1))
        return self.head(x)
