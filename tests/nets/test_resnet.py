import pytest
import torch
import torchvision

from advmed.nets import ResNetClassifier
from advmed.nets.resnet import ImageNetNormalize, imagenet_weights_file


def test_normalisation_is_inside_the_network():
    norm = ImageNetNormalize()
    x = torch.full((1, 3, 2, 2), 0.485)
    assert norm(x)[0, 0].abs().max() < 1e-6  # red channel at the ImageNet mean -> 0
    gray = torch.rand(2, 1, 4, 4)
    assert norm(gray).shape == (2, 3, 4, 4)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_logits_shape(in_channels):
    net = ResNetClassifier("resnet18", num_classes=5, in_channels=in_channels).eval()
    assert net(torch.rand(2, in_channels, 32, 32)).shape == (2, 5)


def test_pretrained_weights_load_from_a_local_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = ResNetClassifier("resnet18", num_classes=4, pretrained_path=str(path))
    assert torch.equal(net.backbone.conv1.weight, reference.conv1.weight)
    assert net.backbone.fc.out_features == 4


def test_missing_pretrained_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ResNetClassifier("resnet18", pretrained_path=str(tmp_path / "nope.pth"))


def test_imagenet_shortcut_points_at_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = imagenet_weights_file("resnet34")
    assert expected.parent == tmp_path / "checkpoints"
    with pytest.raises(FileNotFoundError, match=str(expected)):
        ResNetClassifier("resnet34", pretrained_path="imagenet")


def test_wrong_state_dict_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="not a torchvision resnet18"):
        ResNetClassifier("resnet18", pretrained_path=str(path))


def test_unknown_arch():
    with pytest.raises(ValueError, match="model.arch='vgg'"):
        ResNetClassifier("vgg")


def test_missing_pretrained_file_can_fall_back_to_scratch_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"nope.pth.*Training resnet18 from scratch instead \(model.pretrained_missing=warn\)"):
        net = ResNetClassifier("resnet18", num_classes=2, pretrained_path=str(tmp_path / "nope.pth"), pretrained_missing="warn")
    assert net.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="pretrained_missing must be 'error' or 'warn'"):
        ResNetClassifier("resnet18", pretrained_missing="ignore")
