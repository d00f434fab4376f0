"""torchvision-layout ResNeXt weights → Detectron2 ResNet (for the X-101-32x4d configs)."""
import os
import pickle
import runpy

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.backbone import BasicStem, ResNet

from detkit.modeling import make_resnext_stages
from detkit.modeling.convert import torchvision_resnet_key, torchvision_resnet_to_detectron2
from conftest import REPO_ROOT

# by path: a site-packages "tools" package (from the Detectron2 wheel) shadows this repo's tools/
convert_main = runpy.run_path(os.path.join(REPO_ROOT, "tools", "convert_torchvision_resnet.py"))["main"]


@pytest.mark.parametrize(
    "old, new",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer1.0.conv2.weight", "res2.0.conv2.weight"),
        ("layer3.11.bn3.bias", "res4.11.conv3.norm.bias"),
        ("layer4.0.downsample.0.weight", "res5.0.shortcut.weight"),
        ("layer4.0.downsample.1.running_mean", "res5.0.shortcut.norm.running_mean"),
    ],
)
def test_key_renaming(old, new):
    assert torchvision_resnet_key(old) == new


def test_not_a_resnet_is_refused():
    with pytest.raises(ValueError, match="layer1"):
        torchvision_resnet_to_detectron2({"features.0.weight": torch.zeros(1)})


def test_converted_resnext_matches_torchvision_features(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnext50_32x4d(weights=None).eval()
    for m in reference.modules():  # non-trivial BatchNorm statistics, so a mix-up would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.1, 0.1)
    src, dst = tmp_path / "x50.pth", tmp_path / "x50.pkl"
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, src)
    convert_main([str(src), str(dst)])
    with open(dst, "rb") as f:
        assert not any(k.startswith("stem.fc") for k in pickle.load(f)["model"])

    backbone = ResNet(
        BasicStem(3, 64, norm="FrozenBN"),
        make_resnext_stages(depth=50, num_groups=32, width_per_group=4, stride_in_1x1=False),
        out_features=["res5"],
    ).eval()
    DetectionCheckpointer(backbone).load(str(dst))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        torch.testing.assert_close(backbone(x)["res5"], expected, rtol=1e-4, atol=1e-4)
