"""SWN RetinaNet ResNeXt-101-32x4d-FPN 1x (paper Table 1: 12 epochs, 16 images, SGD lr 0.01; COCO
test-dev 40.8 against 39.0): swn_retinanet_R_50_FPN_1x.py with the
backbone of retinanet_X_101_32x4d_FPN_1x.py (converted ImageNet weights, see that config)."""
from ..common.model_zoo import resnext101_32x4d
from .swn_retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

resnext101_32x4d(model, train)
train.output_dir = "./output/COCO-Detection/swn_retinanet_X_101_32x4d_FPN_1x"
