"""SWN Faster R-CNN R50-FPN on VOC 07+12 (SWN paper Table 2: 52.5 against 51.0)."""
from ..common.swn import swn_rcnn
from .faster_rcnn_R_50_FPN import dataloader, lr_multiplier, model, optimizer, train

swn_rcnn(model, optimizer)
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/PascalVOC-Detection/swn_faster_rcnn_R_50_FPN"
