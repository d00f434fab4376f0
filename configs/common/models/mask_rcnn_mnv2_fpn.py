"""Detectron2's Mask R-CNN FPN on the CPU-sized MobileNetV2-FPN of faster_rcnn_mnv2_fpn.py (the
mask head restored, at 128 channels)."""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from .faster_rcnn_mnv2_fpn import model

_zoo = get_config("common/models/mask_rcnn_fpn.py").model.roi_heads
model.roi_heads.update(
    mask_in_features=_zoo.mask_in_features, mask_pooler=_zoo.mask_pooler, mask_head=_zoo.mask_head
)
model.roi_heads.mask_pooler.sampling_ratio = 2
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=128, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [128, 128]
