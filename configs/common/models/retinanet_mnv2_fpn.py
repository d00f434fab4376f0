"""Detectron2's RetinaNet on a MobileNetV2-FPN (ImageNet weights that install offline), sized for a
CPU: 128-channel FPN and a 2-conv head; anchors 16-256 px for small objects such as tree crowns."""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from detkit.modeling import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, GlobalNormalizerRetinaNet, build_mobilenetv2_fpn

model = get_config("common/models/retinanet.py").model
# The positive count of all DDP processes in the loss normaliser (identical to RetinaNet in one
# process); `model.global_loss_normalizer=False` is Detectron2's per-process count.
model._target_ = GlobalNormalizerRetinaNet
model.global_loss_normalizer = True
model.backbone = L(build_mobilenetv2_fpn)(
    out_channels=128, in_features=["res3", "res4", "res5"], top_block="p6p7", freeze_at=2
)
model.head.input_shape = [ShapeSpec(channels=128)] * 5
model.head.conv_dims = [128, 128]
model.anchor_generator.sizes = [
    [x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [16, 32, 64, 128, 256]
]
model.num_classes = 1
model.pixel_mean = IMAGENET_RGB_MEAN
model.pixel_std = IMAGENET_RGB_STD
model.input_format = "RGB"
