"""VGG19 perceptual features: layer names -> torchvision indices, loading from a local file (never
the network), the missing-weights message and the warn-and-switch-off mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from advmed.nets.resnet import IMAGENET_MEAN, IMAGENET_STD
from advmed.nets.vgg_features import VGG19_LAYERS, VGGFeatures, vgg19_weights_file


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    """A randomly initialised torchvision VGG19 state dict saved like the real file (``features.*``
    keys of ``torchvision.models.vgg19``). Keys and shapes come from vgg19 built on the meta device
    (instant; a real build takes seconds for its 120M-weight classifier, which the loss ignores anyway)."""
    with torch.device("meta"):
        reference = torchvision.models.vgg19(weights=None)
    g = torch.Generator().manual_seed(0)
    state = {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in reference.state_dict().items() if k.startswith("features.")}
    state["classifier.6.bias"] = torch.zeros(1000)  # a key the extractor must ignore
    path = tmp_path_factory.mktemp("vgg") / "vgg19-local.pth"
    torch.save(state, path)
    return path, state


def test_layer_names_map_to_torchvision_feature_indices():
    # torchvision vgg19().features: conv/ReLU pairs, a max pooling after each block (indices 4, 9, 18, 27, 36).
    assert VGG19_LAYERS["relu1_1"] == 1
    assert VGG19_LAYERS["relu2_2"] == 8
    assert VGG19_LAYERS["relu3_4"] == 17
    assert VGG19_LAYERS["relu4_4"] == 26
    assert VGG19_LAYERS["conv5_4"] == 34
    assert VGG19_LAYERS["relu5_4"] == 35
    assert len(VGG19_LAYERS) == 2 * 16  # 16 convolutions, each with its ReLU


@pytest.mark.parametrize(("layer", "channels", "downsampling"), [("relu2_2", 128, 2), ("relu3_4", 256, 4), ("relu5_4", 512, 16)])
def test_truncation_gives_the_layers_channels(vgg19_file, layer, channels, downsampling):
    path, state = vgg19_file
    extractor = VGGFeatures(layer, weights_path=path)
    assert extractor.available
    assert len(extractor.network) == VGG19_LAYERS[layer] + 1
    assert isinstance(extractor.network[-1], nn.ReLU)
    assert torch.equal(extractor.network[0].weight, state["features.0.weight"])  # loaded from the file
    last_conv = VGG19_LAYERS[layer] - 1
    assert torch.equal(extractor.network[last_conv].weight, state[f"features.{last_conv}.weight"])
    out = extractor(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, channels, 32 // downsampling, 32 // downsampling)


def test_features_are_relu_of_conv_on_imagenet_normalised_pixels(vgg19_file):
    path, state = vgg19_file
    x = torch.rand(2, 3, 8, 8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = F.relu(F.conv2d((x - mean) / std, state["features.0.weight"], state["features.0.bias"], padding=1))
    assert torch.allclose(VGGFeatures("relu1_1", weights_path=path)(x), expected, atol=1e-5)


def test_extractor_is_frozen_in_eval_mode_but_passes_gradients_to_the_input(vgg19_file):
    extractor = VGGFeatures("relu2_2", weights_path=vgg19_file[0])
    extractor.train()
    assert not extractor.network.training
    assert not any(p.requires_grad for p in extractor.parameters())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    extractor(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_weights_default_to_the_torch_hub_cache(tmp_path, monkeypatch, vgg19_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert vgg19_weights_file() == expected
    expected.parent.mkdir(parents=True)
    expected.write_bytes(vgg19_file[0].read_bytes())
    assert VGGFeatures("relu1_2").available


def test_missing_weights_name_the_file_the_directory_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        VGGFeatures()
    message = str(info.value)
    assert "'vgg19-dcbb9e9d.pth'" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "never downloads" in message


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'my_vgg.pth' not found in .*point weights_path at your copy of vgg19-dcbb9e9d.pth"):
        VGGFeatures(weights_path=tmp_path / "my_vgg.pth")


def test_missing_weights_can_warn_and_report_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.warns(UserWarning, match=r"VGG19 PERCEPTUAL FEATURES UNAVAILABLE.*vgg19-dcbb9e9d.pth.*switched off"):
        extractor = VGGFeatures(on_missing="warn")
    assert extractor.available is False
    with pytest.raises(RuntimeError, match="unavailable"):
        extractor(torch.rand(1, 3, 8, 8))


def test_unknown_layer_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"layer='relu6_1' is not a VGG19 layer; choose one of .*relu5_4"):
        VGGFeatures("relu6_1")


def test_unknown_on_missing_is_refused():
    with pytest.raises(ValueError, match=r"on_missing='ignore' must be one of \('error', 'warn'\)"):
        VGGFeatures(on_missing="ignore")


def test_a_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"resnet.pth' is not a torchvision VGG19 state dict: it lacks \['features.0.weight'"):
        VGGFeatures("relu1_1", weights_path=path)


def test_a_file_with_wrong_shapes_is_refused(tmp_path):
    path = tmp_path / "vgg_small.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, path)
    with pytest.raises(ValueError, match="vgg_small.pth' does not hold VGG19 weights"):
        VGGFeatures("relu1_1", weights_path=path)


def test_an_injected_network_gets_normalised_pixels():
    tiny = nn.Conv2d(3, 2, 1)
    extractor = VGGFeatures(network=tiny)
    assert extractor.available and not tiny.weight.requires_grad
    x = torch.rand(1, 3, 4, 4)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(extractor(x), tiny((x - mean) / std))
