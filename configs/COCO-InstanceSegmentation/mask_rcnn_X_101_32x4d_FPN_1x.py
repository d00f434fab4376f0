"""Stock Mask R-CNN ResNeXt-101-32x4d-FPN 1x: the SWN paper's X-101 baseline (Table 1), the R50-FPN
model-zoo config with the backbone swapped. Needs the converted ImageNet weights:
`python tools/convert_torchvision_resnet.py resnext101_32x4d.pth weights/X-101-32x4d-torchvision.pkl`
(see that tool for where the weights come from)."""
from ..common.model_zoo import resnext101_32x4d
from .mask_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

resnext101_32x4d(model, train)
train.output_dir = "./output/COCO-InstanceSegmentation/mask_rcnn_X_101_32x4d_FPN_1x"
