"""The generator and discriminator of AdvGAN (Xiao et al. 2018, "Generating adversarial examples with
adversarial networks", IJCAI, sec. 3 and the architecture of their experiments), as Lockshin et al. 2022
(sec. 3.3, Fig. 3) use it on histology tiles: ``G`` maps an image to a perturbation of its size, the
attacked image is ``x_adv = clamp(x + G(x), 0, 1)`` (:func:`apply_perturbation`), and ``D`` tells
``x_adv`` from clean images.

Generator (Xiao et al.'s image-transformation network, after Johnson et al. 2016 / CycleGAN): a
3x3 convolution, ``depth`` stride-2 3x3 convolutions (channels doubling), ``residual_blocks``
residual blocks, ``depth`` x2 upsamplings back to the input size and a 3x3 convolution to the image
channels; instance normalisation and ReLU after every inner convolution. Xiao et al.'s c3-8, d16,
d32, 4 x r32, u16, u8, c3 is ``base_width=8, depth=2, residual_blocks=4`` (the defaults).

Output bound. Lockshin et al. bound the noise only through the threshold loss (eq. 6), so the
generator is not clipped to a budget: its last layer goes through ``max_perturbation * tanh`` with
``max_perturbation = 1`` by default, the widest perturbation that can matter for [0, 1] images
(``x + G(x)`` is clamped anyway), and tanh keeps its gradient finite where a plain output could
run away before the threshold loss reins it in. A smaller ``max_perturbation`` (e.g. 0.1) adds a
hard L-inf bound on top, as the public AdvGAN code clamps its noise; it is not the paper's.
The last layer starts at zero, so an untrained generator is the identity attack (``G(x) = 0``): the
threshold term starts at 0 and training starts from the clean image.

Discriminator (Xiao et al.'s C8, C16, C32): ``depth`` 4x4 stride-2 convolutions with LeakyReLU 0.2
and instance normalisation (none after the first), then a 3x3 convolution to one logit per patch
(a PatchGAN, Isola et al. 2017) instead of their fully connected layer, so that one network serves
any image size. :class:`~advmed.losses.advgan.VanillaGANLoss` averages over the patches.

Both networks take [0, 1] images and move them to [-1, 1] themselves (DESIGN contract 1).
Written here: no library ships these networks; the layers are torch's.
"""

from __future__ import annotations

from torch import Tensor, nn

UPSAMPLINGS = ("transposed", "bilinear")


def _check_positive(**values: int | float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}={value} must be > 0")


def conv_norm_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.InstanceNorm2d(cout, affine=True),
                         nn.ReLU(inplace=True))


def up_norm_relu(cin: int, cout: int, upsampling: str) -> nn.Sequential:
    if upsampling == "transposed":  # Xiao et al.'s fractionally strided convolution
        up = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False)
    else:  # bilinear then a convolution: no checkerboard pattern in the noise (Odena et al. 2016)
        up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                           nn.Conv2d(cin, cout, 3, padding=1, bias=False))
    return nn.Sequential(up, nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """``x + conv-norm(relu(conv-norm(x)))`` at constant width (Johnson et al. 2016)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.InstanceNorm2d(width, affine=True), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.InstanceNorm2d(width, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AdvGANGenerator(nn.Module):
    """Image (N, C, H, W) in [0, 1] -> perturbation (N, C, H, W) in ``[-max_perturbation, max_perturbation]``.

    Args:
        in_channels: image channels (3 for H&E).
        base_width: channels of the first convolution; doubles at each stride-2 block.
        depth: stride-2 blocks (and upsamplings): H and W must be divisible by ``2**depth`` and at
            least ``2**(depth + 1)``.
        residual_blocks: residual blocks at the bottleneck width ``base_width * 2**depth``.
        max_perturbation: the tanh output's scale, in (0, 1]; 1 (the paper's reading): the threshold
            loss alone bounds the noise.
        upsampling: ``transposed`` (Xiao et al.) or ``bilinear`` (upsample, then convolve).
    """

    def __init__(self, in_channels: int = 3, base_width: int = 8, depth: int = 2, residual_blocks: int = 4,
                 max_perturbation: float = 1.0, upsampling: str = "transposed") -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, base_width=base_width, depth=depth)
        if residual_blocks < 0:
            raise ValueError(f"residual_blocks={residual_blocks} must be >= 0")
        if not 0.0 < max_perturbation <= 1.0:
            raise ValueError(f"max_perturbation={max_perturbation} must be in (0, 1]: the noise of a [0, 1] image "
                             "never needs more than 1 (1: the threshold loss alone bounds it, as in the paper)")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling={upsampling!r} must be one of {UPSAMPLINGS}")
        self.in_channels, self.depth, self.max_perturbation = in_channels, depth, float(max_perturbation)
        widths = [base_width * 2**i for i in range(depth + 1)]
        down = [conv_norm_relu(in_channels, widths[0])]
        down += [conv_norm_relu(cin, cout, stride=2) for cin, cout in zip(widths[:-1], widths[1:])]
        self.encoder = nn.Sequential(*down)
        self.residual = nn.Sequential(*(ResidualBlock(widths[-1]) for _ in range(residual_blocks)))
        self.decoder = nn.Sequential(*(up_norm_relu(cin, cout, upsampling)
                                       for cin, cout in zip(widths[:0:-1], widths[-2::-1])))
        self.head = nn.Conv2d(widths[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # start as the identity attack (G(x) = 0)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        multiple = 2**self.depth
        # At least 2x2 at the bottleneck: instance normalisation of a single pixel is undefined.
        if (x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2] % multiple or x.shape[-1] % multiple
                or min(x.shape[-2:]) < 2 * multiple):
            raise ValueError(f"the AdvGAN generator of depth {self.depth} takes images (N, {self.in_channels}, H, W) with "
                             f"H and W divisible by {multiple} and at least {2 * multiple}, got {tuple(x.shape)}: "
                             "resize the data (data.image_size) or change model.depth")
        h = self.decoder(self.residual(self.encoder(2.0 * x - 1.0)))
        return self.max_perturbation * self.head(h).tanh()


def apply_perturbation(x: Tensor, perturbation: Tensor) -> Tensor:
    """``x_adv = clamp(x + G(x), 0, 1)``: the attacked image in pixel space."""
    return (x + perturbation).clamp(0.0, 1.0)


class AdvGANDiscriminator(nn.Module):
    """Image (N, C, H, W) in [0, 1] -> patch logits (N, 1, H / 2**depth, W / 2**depth) (real: high).

    Args:
        in_channels: image channels.
        base_width: channels of the first convolution; doubles per stride-2 block.
        depth: stride-2 4x4 convolutions (Xiao et al.: 3, widths 8, 16, 32); H and W must be at least
            ``2**(depth + 1)``.
    """

    def __init__(self, in_channels: int = 3, base_width: int = 8, depth: int = 3) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, base_width=base_width, depth=depth)
        self.depth = depth
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            cout = base_width * 2**i
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=i == 0))
            if i > 0:  # none on the first layer (Xiao et al., after DCGAN / pix2pix)
                layers.append(nn.InstanceNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.logits = nn.Conv2d(cin, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        side = 2 ** (self.depth + 1)  # at least 2x2 patches: instance normalisation of one pixel is undefined
        if min(x.shape[-2:]) < side:
            raise ValueError(f"the AdvGAN discriminator of depth {self.depth} needs images of at least {side}x{side} px, "
                             f"got {tuple(x.shape[-2:])}: lower model.critic_depth")
        return self.logits(self.features(2.0 * x - 1.0))
