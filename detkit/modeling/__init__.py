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
from .loss_normalizer import GlobalLossNormalizer, GlobalNormalizerRetinaNet
from .resnext import make_resnext_stages
from .nms_inference import detections_before_nms, soft_nms_inference
from .soft_nms import batched_soft_nms
from .tta import RCNNWithTTA, RetinaNetWithTTA, build_tta_model

__all__ = [
    "GlobalLossNormalizer",
    "GlobalNormalizerRetinaNet",
    "IMAGENET_RGB_MEAN",
    "IMAGENET_RGB_STD",
    "MobileNetV2",
    "build_mobilenetv2_fpn",
    "imagenet_weights_path",
    "load_imagenet_state_dict",
    "make_resnext_stages",
    "torchvision_resnet_to_detectron2",
    "RCNNWithTTA",
    "RetinaNetWithTTA",
    "batched_soft_nms",
    "build_tta_model",
    "detections_before_nms",
    "soft_nms_inference",
]
