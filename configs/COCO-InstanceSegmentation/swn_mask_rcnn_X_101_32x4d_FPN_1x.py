"""SWN Mask R-CNN ResNeXt-101-32x4d-FPN 1x (paper Table 1; COCO test-dev box 42.5 against 41.4):
swn_mask_rcnn_R_50_FPN_1x.py with the backbone of mask_rcnn_X_101_32x4d_FPN_1x.py (converted
ImageNet weights, see that config)."""
from ..common.model_zoo import resnext101_32x4d
from .swn_mask_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

resnext101_32x4d(model, train)
train.output_dir = "./output/COCO-InstanceSegmentation/swn_mask_rcnn_X_101_32x4d_FPN_1x"
