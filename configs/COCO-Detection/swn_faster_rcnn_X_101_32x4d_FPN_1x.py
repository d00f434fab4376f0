"""SWN Faster R-CNN ResNeXt-101-32x4d-FPN 1x (paper Table 1: 12 epochs, 16 images, SGD lr 0.02; COCO test-dev 41.4 against 40.3):
swn_faster_rcnn_R_50_FPN_1x.py with the backbone of faster_rcnn_X_101_32x4d_FPN_1x.py (converted
ImageNet weights, see that config)."""
from ..common.model_zoo import resnext101_32x4d
from .swn_faster_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

resnext101_32x4d(model, train)
train.output_dir = "./output/COCO-Detection/swn_faster_rcnn_X_101_32x4d_FPN_1x"
