"""The generator and critic of Chen et al. 2019's deformation + intensity attack on CT segmentation.

Generator (paper sec. 3.1, Fig. 1): a CNN encoder of the clean slice ``I0`` gives two latent
Gaussians ``z_D ~ N(mu_D, sigma_D^2)`` and ``z_V ~ N(mu_V, sigma_V^2)`` (reparameterised, so
sampling them gives several attacks per image); two decoders of the same architecture that do not
share weights turn them into a dense deformation ``D`` (2 channels: dx, dy) and an intensity
field ``V``; ``I_DV = warp(I0, D) + V`` (eq. 1), clipped to [0, 1]. Batch normalisation after
convolutions and LeakyReLU 0.2 (sec. 3.3). The latents are spatial maps (the encoder's output
grid), so the network is fully convolutional and works at any size divisible by ``2**depth``.

Units: ``D`` is in **pixels** of the image (``D[:, 0]`` moves along x = columns, ``D[:, 1]``
along y = rows; the output pixel (y, x) samples ``I0`` at (y + dy, x + dx)), warped bilinearly
with kornia's ``remap`` (border padding). ``V`` is in intensity units of the [0, 1] image.
The last layer of each decoder starts at zero, so an untrained generator is the identity
(``D = 0``, ``V = 0``): training starts from the clean image.

Written here: no library provides this generator; the layers are torch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.geometry.transform import remap
from torch import Tensor, nn

COMPONENTS = ("dv", "d", "v")


def conv_bn_lrelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def up_bn_lrelu(cin: int, cout: int) -> nn.Sequential:
    # Bilinear upsampling then a convolution, not a transposed convolution: the latter paints a
    # checkerboard into D and V (Odena et al. 2016), which the paper's smooth fields do not show.
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), conv_bn_lrelu(cin, cout))


def warp(image: Tensor, displacement: Tensor) -> Tensor:
    """Sample ``image`` (N, C, H, W) at each pixel plus ``displacement`` (N, 2, H, W; dx, dy in
    pixels), bilinearly, with border padding."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=image.device, dtype=image.dtype),
        torch.arange(w, device=image.device, dtype=image.dtype),
        indexing="ij",
    )
    map_x = xs.expand(n, h, w) + displacement[:, 0]
    map_y = ys.expand(n, h, w) + displacement[:, 1]
    return remap(image, map_x, map_y, mode="bilinear", padding_mode="border", align_corners=True)


class LatentDecoder(nn.Module):
    """Spatial latent (N, latent, h, w) -> field (N, out_channels, h * 2**depth, w * 2**depth)."""

    def __init__(self, latent_channels: int, widths: list[int], out_channels: int) -> None:
        super().__init__()
        layers = [conv_bn_lrelu(latent_channels, widths[-1])]
        for cin, cout in zip(widths[::-1], [*widths[-2::-1], widths[0]]):
            layers.append(up_bn_lrelu(cin, cout))
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # start as the identity attack (D = 0, V = 0)
        nn.init.zeros_(self.head.bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.body(z))


@dataclass
class AttackFields:
    """What one generator pass produces (all (N, ., H, W))."""

    x_adv: Tensor  # I_DV (or I_D / I_V for the ablations), in [0, 1]
    x_warped: Tensor  # I_D = warp(I0, D)
    deformation: Tensor  # D, pixels
    intensity: Tensor  # V
    mu: Tensor  # (N, 2 * latent, h, w): mu_D then mu_V
    logvar: Tensor


class DeformationGenerator(nn.Module):
    """``I0 -> (I_DV, D, V)``.

    Args:
        in_channels: image channels (1 for CT).
        base_width: channels of the first encoder block; doubles per block.
        depth: stride-2 blocks of the encoder (and upsamplings of each decoder).
        latent_channels: channels of each spatial latent map (z_D, z_V).
        components: ``dv`` (the paper), ``d`` (deformation only, V = 0) or ``v`` (intensity only, D = 0).
    """

    def __init__(self, in_channels: int = 1, base_width: int = 16, depth: int = 3, latent_channels: int = 8,
                 components: str = "dv") -> None:
        super().__init__()
        if components not in COMPONENTS:
            raise ValueError(f"components={components!r} must be one of {COMPONENTS} (d+v, deformation only, intensity only)")
        if depth < 1 or base_width < 1 or latent_channels < 1:
            raise ValueError(f"depth, base_width and latent_channels must be >= 1, got {depth}, {base_width}, {latent_channels}")
        self.components, self.depth, self.latent_channels = components, depth, latent_channels
        widths = [base_width * 2**i for i in range(depth)]
        blocks = [conv_bn_lrelu(in_channels, widths[0])]
        blocks += [conv_bn_lrelu(cin, cout, stride=2) for cin, cout in zip([widths[0], *widths[:-1]], widths)]
        self.encoder = nn.Sequential(*blocks)
        # mu and log-variance of z_D and z_V in one 1x1 convolution.
        self.latent = nn.Conv2d(widths[-1], 4 * latent_channels, 1)
        self.decode_deformation = LatentDecoder(latent_channels, widths, 2)
        self.decode_intensity = LatentDecoder(latent_channels, widths, in_channels)

    def forward(self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None) -> AttackFields:
        """``sample=False`` decodes the means (deterministic); ``generator`` seeds the sampling."""
        multiple = 2**self.depth
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"the attacker of depth {self.depth} needs H and W divisible by {multiple}, got {tuple(x.shape[-2:])}")
        stats = self.latent(self.encoder(x))
        mu, logvar = stats.chunk(2, dim=1)
        logvar = logvar.clamp(-10.0, 10.0)  # keeps exp() finite early in training
        z = mu
        if sample:
            noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
            z = mu + noise * torch.exp(0.5 * logvar)
        z_d, z_v = z.chunk(2, dim=1)
        zeros = x.new_zeros(x.shape[0], 1, *x.shape[-2:])
        deformation = self.decode_deformation(z_d) if self.components in ("dv", "d") else zeros.expand(-1, 2, -1, -1)
        intensity = self.decode_intensity(z_v) if self.components in ("dv", "v") else zeros.expand(-1, x.shape[1], -1, -1)
        warped = warp(x, deformation) if self.components != "v" else x
        return AttackFields((warped + intensity).clamp(0.0, 1.0), warped, deformation, intensity, mu, logvar)


class Critic(nn.Module):
    """WGAN critic: stride-2 convolutions with LeakyReLU 0.2 to one unbounded score per image.

    No batch normalisation: the gradient penalty is defined per sample (Gulrajani et al. 2017 sec. 4),
    which batch statistics would break; layer-free of normalisation, as they recommend.
    """

    def __init__(self, in_channels: int = 1, base_width: int = 16, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = base_width * 2**i
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(cin, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> (N,) scores."""
        return self.score(self.features(x).mean(dim=(2, 3))).squeeze(1)
