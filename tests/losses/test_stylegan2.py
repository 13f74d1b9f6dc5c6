"""StyleGAN2 losses on hand-computed values: the logistic loss (Lockshin eq. 1), R1 on a linear
discriminator, path length (StyleGAN2 eq. 4) on a linear generator and its running mean."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advmed.losses.stylegan2 import NonSaturatingLoss, PathLengthPenalty, R1Penalty, path_lengths
from advmed.nets.stylegan2 import StyleGAN2Generator


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_non_saturating_losses_on_given_logits():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    g = NonSaturatingLoss.generator(fake)
    assert g.keys() == {"adversarial"}
    assert g["adversarial"].item() == pytest.approx((softplus(-0.5) + softplus(3.0)) / 2, rel=1e-6)
    d = NonSaturatingLoss.critic(real, fake)
    assert d["real"].item() == pytest.approx((softplus(-2.0) + softplus(1.0)) / 2, rel=1e-6)
    assert d["fake"].item() == pytest.approx((softplus(0.5) + softplus(-3.0)) / 2, rel=1e-6)
    # -log sigmoid(l) and -log(1 - sigmoid(l)): eq. 1 with D = sigmoid(logit).
    sigmoid = 1 / (1 + math.exp(-2.0))
    assert NonSaturatingLoss.critic(torch.tensor([2.0]), torch.tensor([2.0]))["fake"].item() == pytest.approx(-math.log(1 - sigmoid), rel=1e-6)


def test_non_saturating_losses_are_float32_for_bf16_logits():
    d = NonSaturatingLoss.critic(torch.tensor([2.0], dtype=torch.bfloat16), torch.tensor([0.5], dtype=torch.bfloat16))
    assert d["real"].dtype == torch.float32 and d["fake"].dtype == torch.float32


class LinearCritic(nn.Module):
    """D(x) = sum(a * x): its input gradient is ``a`` for every image."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.a).flatten(1).sum(1)


def test_r1_of_a_linear_discriminator_is_half_gamma_times_the_squared_norm():
    a = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]])  # (1, 2, 2): ||a||^2 = 1 + 4 + 0.25 + 9 = 14.25
    critic = LinearCritic(a)
    real = torch.rand(3, 1, 2, 2)
    terms = R1Penalty(gamma=10.0, pixel_scale=1.0)(critic, real)
    assert terms.keys() == {"r1"}
    assert terms["r1"].item() == pytest.approx(5.0 * 14.25, rel=1e-6)
    # create_graph: the penalty trains D; d/da (gamma / 2) ||a||^2 = gamma * a.
    terms["r1"].backward()
    assert torch.allclose(critic.a.grad, 10.0 * a)
    # In the paper's [-1, 1] pixel units the gradient is half ours: a quarter of the penalty.
    assert R1Penalty(gamma=10.0)(critic, real)["r1"].item() == pytest.approx(5.0 * 14.25 / 4, rel=1e-6)


def test_r1_is_computed_in_float32_under_bf16_autocast():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    real = torch.rand(4, 3, 2, 2)
    reference = R1Penalty(gamma=1.0)(critic, real)["r1"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert critic(real).dtype == torch.bfloat16  # autocast is really on for the critic ...
        under_autocast = R1Penalty(gamma=1.0)(critic, real)["r1"]
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(reference.item(), rel=1e-6)  # ... but not inside R1


def linear_synthesis(matrix: torch.Tensor, size: int):
    """G(w) = A w as a one-channel size x size image; (N, L, D) ws: the sum over layers of A_l w_l."""

    def synthesis(ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim == 2:
            return (ws @ matrix.T).view(-1, 1, size, size)
        return torch.einsum("lpd,nld->np", matrix, ws).view(-1, 1, size, size)

    return synthesis


def seeded_y(n: int, size: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """The random image path_lengths draws with this seed: N(0, I) / sqrt(H W) times the scale."""
    return torch.randn((n, 1, size, size), generator=torch.Generator().manual_seed(seed)) * scale / size


def test_path_length_of_a_linear_generator_is_the_norm_of_a_transpose_y():
    size, w_dim = 3, 4
    matrix = torch.randn(size * size, w_dim)
    ws = torch.randn(2, w_dim)
    lengths = path_lengths(linear_synthesis(matrix, size), ws, generator=torch.Generator().manual_seed(7))
    y = seeded_y(2, size, 7).flatten(1)  # (N, H W)
    expected = (y @ matrix).norm(dim=1)  # J^T y = A^T y
    assert torch.allclose(lengths, expected, rtol=1e-5)
    doubled = path_lengths(linear_synthesis(matrix, size), ws, pixel_scale=2.0, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(doubled, 2 * expected, rtol=1e-5)


def test_path_length_over_layers_is_the_root_mean_square_of_the_layer_norms():
    size, layers, w_dim = 2, 3, 4
    matrix = torch.randn(layers, size * size, w_dim)
    ws = torch.randn(2, layers, w_dim)
    lengths = path_lengths(linear_synthesis(matrix, size), ws, generator=torch.Generator().manual_seed(3))
    y = seeded_y(2, size, 3).flatten(1)
    for i in range(2):
        per_layer = [float((matrix[layer].T @ y[i]).norm()) for layer in range(layers)]
        assert lengths[i].item() == pytest.approx(math.sqrt(sum(v * v for v in per_layer) / layers), rel=1e-5)


def test_path_length_penalty_and_its_running_mean_after_two_calls():
    size, w_dim, weight, decay = 3, 4, 2.0, 0.01
    matrix = torch.randn(size * size, w_dim)
    synthesis = linear_synthesis(matrix, size)
    penalty = PathLengthPenalty(pl_weight=weight, pl_decay=decay, pl_batch_shrink=2, pixel_scale=1.0)
    ws = torch.randn(4, w_dim)
    pl_mean = 0.0
    for seed in (11, 12):
        terms = penalty(synthesis, ws, generator=torch.Generator().manual_seed(seed))
        y = seeded_y(2, size, seed).flatten(1)  # batch shrink 2: the first 2 of the 4 ws
        lengths = [float((matrix.T @ y[i]).norm()) for i in range(2)]
        pl_mean = pl_mean + decay * (sum(lengths) / 2 - pl_mean)
        expected = weight * sum((v - pl_mean) ** 2 for v in lengths) / 2
        assert penalty.pl_mean.item() == pytest.approx(pl_mean, rel=1e-5)
        assert terms["path_length"].item() == pytest.approx(expected, rel=1e-5)


def test_path_length_is_computed_in_float32_under_bf16_autocast():
    linear = nn.Linear(4, 9)
    penalty = PathLengthPenalty(pl_batch_shrink=1)
    ws = torch.randn(3, 4)

    def synthesis(w):
        return linear(w).view(-1, 1, 3, 3)

    reference = path_lengths(synthesis, ws, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert synthesis(ws).dtype == torch.bfloat16
        lengths = path_lengths(synthesis, ws, generator=torch.Generator().manual_seed(0))
        terms = penalty(synthesis, ws)
    assert lengths.dtype == torch.float32 and terms["path_length"].dtype == torch.float32
    assert torch.allclose(lengths, reference, rtol=1e-6)


def test_pl_mean_is_saved_and_restored_with_the_state_dict():
    penalty = PathLengthPenalty()
    penalty(linear_synthesis(torch.randn(4, 2), 2), torch.randn(4, 2))
    assert penalty.pl_mean.item() > 0
    holder = nn.Module()
    holder.pl = penalty
    state = holder.state_dict()
    assert set(state) == {"pl.pl_mean"}
    restored = nn.Module()
    restored.pl = PathLengthPenalty()
    restored.load_state_dict(state)
    assert restored.pl.pl_mean.item() == penalty.pl_mean.item()


def test_path_length_regularises_the_whole_tiny_generator():
    g = StyleGAN2Generator(z_dim=8, w_dim=8, num_classes=2, img_resolution=8, channel_base=64, channel_max=16, mapping_layers=2)
    ws = g.training_ws(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]))
    terms = PathLengthPenalty()(g.synthesis, ws)
    assert torch.isfinite(terms["path_length"]) and terms["path_length"].item() > 0
    terms["path_length"].backward()
    for name in ("mapping_network.layers.0.weight", "synthesis_network.blocks.1.conv0.conv.weight"):
        grad = dict(g.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: R1Penalty(gamma=-1.0), r"model.r1_gamma=-1.0 must be a finite number >= 0"),
        (lambda: R1Penalty(gamma=float("nan")), r"model.r1_gamma=nan must be"),
        (lambda: R1Penalty(pixel_scale=0.0), r"model.pixel_scale=0.0 must be > 0"),
        (lambda: PathLengthPenalty(pl_weight=-2.0), r"model.pl_weight=-2.0 must be a finite number >= 0"),
        (lambda: PathLengthPenalty(pl_decay=0.0), r"model.pl_decay=0.0 must be in \(0, 1\]"),
        (lambda: PathLengthPenalty(pl_batch_shrink=0), r"model.pl_batch_shrink=0 must be an integer >= 1"),
        (lambda: PathLengthPenalty(pl_batch_shrink=1.5), r"model.pl_batch_shrink=1.5 must be an integer >= 1"),
        (lambda: PathLengthPenalty(pixel_scale=-1.0), r"model.pixel_scale=-1.0 must be > 0"),
    ],
)
def test_bad_settings_are_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()
