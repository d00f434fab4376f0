"""Backbones and model builders shared by the projects."""
from .mobilenet import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    MobileNetV2,
    build_mobilenetv2_fpn,
    imagenet_weights_path,
    load_imagenet_state_dict,
)
from .convert import torchvision_resnet_to_detectron2
from .resnext import make_resnext_stages

__all__ = [
    "IMAGENET_RGB_MEAN",
    "IMAGENET_RGB_STD",
    "MobileNetV2",
    "build_mobilenetv2_fpn",
    "imagenet_weights_path",
    "load_imagenet_state_dict",
    "make_resnext_stages",
    "torchvision_resnet_to_detectron2",
]
