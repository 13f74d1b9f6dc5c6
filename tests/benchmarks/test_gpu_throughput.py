"""The GPU throughput benchmark (experiments/benchmarks/gpu_throughput.py) on a CPU: it refuses to run
without CUDA, its FLOP counts equal hand counts on a tiny network (an attack's input gradient
included), its peak-FLOP table and override behave, and its timed Trainer windows work."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from torch import nn

from advmed.attacks import FGSM
from advmed.models.classifier import ClassifierModule
from tests.benchmarks.conftest import benchmark_scripts

N, C, S, K, WIDTH = 2, 3, 8, 5, 4  # the tiny network: 3x3 conv C -> WIDTH (no bias) on S x S, linear -> K
CONV = 2 * N * WIDTH * S * S * C * 3 * 3  # multiply-adds x 2 of the convolution's forward = 27,648
LINEAR = 2 * N * (WIDTH * S * S) * K  # ... of the linear layer's forward = 5,120


@pytest.fixture(scope="module")
def gpu() -> ModuleType:
    with benchmark_scripts("gpu_throughput") as scripts:
        yield scripts["gpu_throughput"]


def _tiny_classifier(**kwargs) -> ClassifierModule:
    """A ClassifierModule whose network is the tiny conv + linear net (its forward calls ``self.net``)."""
    torch.manual_seed(0)
    module = ClassifierModule(arch="resnet34", num_classes=K, in_channels=C, **kwargs)
    module.net = nn.Sequential(nn.Conv2d(C, WIDTH, 3, padding=1, bias=False), nn.Flatten(),
                               nn.Linear(WIDTH * S * S, K))
    return module


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.rand(N, C, S, S), torch.tensor([0, 3])


def test_training_step_flops_equal_a_hand_count(gpu):
    x, y = _batch()
    assert gpu.forward_flops(_tiny_classifier().net, x) == CONV + LINEAR
    # Backward: the linear layer's input and weight gradients (one forward's FLOPs each); the
    # convolution's weight gradient only, since nothing needs the input's gradient.
    clean = CONV + LINEAR + 2 * LINEAR + CONV
    assert gpu.training_step_flops(_tiny_classifier(), x, y) == clean == 70_656


def test_an_attack_adds_a_forward_and_an_input_only_backward(gpu):
    """FGSM's gradient w.r.t. x costs one forward and one input backward (no weight-gradient work, as
    advmed.attacks takes it with torch.autograd.grad), on the images it attacks."""
    x, y = _batch()
    attack_batch = (CONV + LINEAR) + (CONV + LINEAR)  # forward + input backward, for the batch of N
    clean = 70_656
    every = _tiny_classifier(adv_fraction=1.0, train_attack=FGSM(eps=0.03))
    assert gpu.training_step_flops(every, x, y) == clean + attack_batch
    half = _tiny_classifier(adv_fraction=0.5, train_attack=FGSM(eps=0.03))  # 1 of the 2 images attacked
    assert gpu.training_step_flops(half, x, y) == clean + attack_batch // 2


def test_flop_counting_leaves_the_module_alone(gpu):
    module = _tiny_classifier(adv_fraction=1.0, train_attack=FGSM(eps=0.03))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    gpu.training_step_flops(module, *_batch())
    assert all(p.grad is None for p in module.parameters())
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA H100 PCIe", 756e12),
])
def test_peak_flops_by_device_name(gpu, name, peak):
    assert gpu.peak_flops(name) == peak


def test_peak_flops_override_and_unknown_devices(gpu):
    assert gpu.peak_flops("Tesla T4", 65.0) == 65e12
    with pytest.raises(ValueError, match=r"no peak bf16 FLOP/s known for the GPU 'Tesla T4' .*as --peak-tflops"):
        gpu.peak_flops("Tesla T4")
    with pytest.raises(ValueError, match="--peak-tflops -1 must be > 0"):
        gpu.peak_flops("NVIDIA H200", -1)


def test_refuses_to_run_without_cuda(gpu, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu.main([])
    err = capsys.readouterr().err
    assert "no CUDA device (torch.cuda.is_available() is False)" in err and "classifier.py --device cpu" in err


@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "cpu"], "--device cpu: this benchmark measures a CUDA GPU"),
    (["--steps", "30", "--window", "20"], "--steps 30 must be a multiple of --window 20"),
    (["--peak-tflops", "0"], "--peak-tflops 0.0 must be > 0"),
    (["--batch", "0"], "--batch 0 must be >= 1"),
])
def test_bad_flags_are_refused(gpu, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the flags are checked before the device
    with pytest.raises(SystemExit):
        gpu.parse_args(flags)
    assert message in capsys.readouterr().err


def test_timed_windows_of_a_real_fit(gpu):
    """The Trainer path the GPU run takes, on a CPU: warm-up steps untimed, then one duration per window."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    module = ClassifierModule(arch="resnet34", num_classes=9, in_channels=3, image_size=16)
    loader = gpu.ready_loader(2, 2, 16, cpu)
    x, y = loader.dataset[0]
    assert x.shape == (2, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1 and y.dtype == torch.long
    windows = gpu.measure(module, loader, warmup=1, steps=2, window=1, device=cpu, precision="32-true")
    assert len(windows) == 2 and all(s > 0 for s in windows)
    assert module.global_step == 3
